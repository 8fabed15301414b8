"""The shared prototype/affinity core, checked against values computed by hand."""
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from protocal.prototypes import (PrototypeBank, agnostic_energy, class_energies,
                                 energy_to_pixels, labelled_to_unlabelled_distances,
                                 mean_affinity, node_indices, node_masks_from_points,
                                 prototype_cosine)

SQ2 = math.sqrt(2)


def grid_feats(*vectors):
    """(1, D, N) features from node vectors listed in row-major order."""
    return torch.tensor(vectors, dtype=torch.float32).t().unsqueeze(0)


def test_node_index_is_row_major_not_transposed():
    # T3: a point at x=40 (column), y=5 (row) with 32 px nodes is node 1 (row 0, column 1)
    idx = node_indices(torch.tensor([[40.0, 5.0], [5.0, 40.0], [1023.9, 1023.9]]), 32, (32, 32))
    assert idx.tolist() == [1, 32, 1023]


def test_node_masks_keep_every_label_in_a_shared_node():
    points = [torch.tensor([[1.0, 1.0], [2.0, 2.0], [9.0, 1.0]]), torch.zeros(0, 2)]
    labels = [torch.tensor([0, 1, 1]), torch.zeros(0, dtype=torch.long)]
    masks = node_masks_from_points(points, labels, num_classes=2, stride=8, grid_hw=(2, 2))
    assert masks.shape == (2, 2, 4)
    assert masks[0, 0].tolist() == [True, False, False, False]
    assert masks[0, 1].tolist() == [True, True, False, False]
    assert not masks[1].any()


def test_mean_affinity_matches_pairwise_definition():
    feats = grid_feats((1, 0), (0, 1), (1, 0), (-1, 0))
    aff, count = mean_affinity(feats, torch.tensor([[True, True, False, False]]))
    # node 2: (s(2,0) + s(2,1)) / 2 = (1 + 0.5) / 2; node 3: (0 + 0.5) / 2
    assert count.tolist() == [2.0]
    torch.testing.assert_close(aff[0], torch.tensor([0.75, 0.75, 0.75, 0.25]))
    # an empty set gives affinity 0 (not NaN)
    aff, count = mean_affinity(feats, torch.zeros(1, 4, dtype=torch.bool))
    assert count.item() == 0 and torch.all(aff == 0)


def test_mean_affinity_zero_feature_is_finite():
    feats = grid_feats((0, 0), (0, 1))
    aff, _ = mean_affinity(feats, torch.tensor([[True, False]]))
    assert torch.isfinite(aff).all()
    torch.testing.assert_close(aff[0], torch.tensor([0.5, 0.5]))


def test_agnostic_energy_by_hand():
    feats = grid_feats((1, 0), (0, 1), (1, 0), (-1, 0))
    masks = torch.tensor([[[True, False, False, False]]])
    # S = [1, .5, 1, 0] -> E = 1 - S, labelled node 0 forced to 1
    torch.testing.assert_close(agnostic_energy(feats, masks)[0], torch.tensor([1, 0.5, 0, 1.0]))
    # no labelled node at all: plain cross-entropy (energy 1 everywhere)
    assert torch.all(agnostic_energy(feats, torch.zeros(1, 1, 4, dtype=torch.bool)) == 1)


def pcl_case():
    feats = grid_feats((1, 0), (0, 1), (1, 1), (-1, 0))
    masks = torch.zeros(1, 2, 4, dtype=torch.bool)
    masks[0, 0, 0] = True  # class 0 at node 0
    masks[0, 1, 3] = True  # class 1 at node 3
    protos = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    return feats, masks, protos


def test_class_energies_by_hand():
    feats, masks, protos = pcl_case()
    energy = class_energies(feats, masks, protos, alpha=0.2)
    c = 1 / SQ2
    # background: mean of normalised labelled features is 0 -> S = 0.5 -> E = 0.5
    bg = [1, 0.5, 0.5, 1]
    # class 0: M = 0.2 * cos(f, p0) + 0.8 * (1 + cos(f, f0)) / 2
    cls0 = [1, 1 - (0.2 * 1 + 0.8 * 0.5), 1 - (0.2 * c + 0.8 * (1 + c) / 2), 1]
    cls1 = [1, 1 - (0.2 * 0 + 0.8 * 0.5), 1 - (0.2 * c + 0.8 * (1 - c) / 2), 1]
    torch.testing.assert_close(energy[0], torch.tensor([bg, cls0, cls1]))


def test_class_energies_without_class_label_uses_prototype_only():
    feats, masks, protos = pcl_case()
    masks[0, 1] = False  # image has no class-1 label now
    energy = class_energies(feats, masks, protos, alpha=0.2)
    expected = 1 - prototype_cosine(feats, protos)[0, 1]
    expected[0] = 1  # node 0 is labelled (class 0)
    torch.testing.assert_close(energy[0, 2], expected)
    energy01 = class_energies(feats, masks, protos, alpha=0.2, prototype_similarity='cosine01')
    assert energy01[0, 2, 1:].max() <= 1 and energy[0, 2, 1:].max() > 1  # raw cosine reaches 2
    with pytest.raises(ValueError, match='prototype_similarity'):
        class_energies(feats, masks, protos, prototype_similarity='dot')


def test_energy_to_pixels_nearest_and_bilinear():
    energy = torch.tensor([[1.0, 0.5, 0.0, 1.0]])
    near = energy_to_pixels(energy, (2, 2), (4, 4), mode='nearest', channels=3)
    assert near.shape == (1, 3, 4, 4)
    assert near[0, 0, :2, 2:].eq(0.5).all() and near[0, 2, 2:, :2].eq(0).all()
    bil = energy_to_pixels(energy, (2, 2), (4, 4))
    assert bil[0, 0, 0, 0] == 1.0 and 0 < bil[0, 0, 1, 1] < 1


def test_labelled_to_unlabelled_distances():
    feats = grid_feats((1, 0), (0, 1), (1, 0), (-1, 0))
    dist_, pairs = labelled_to_unlabelled_distances(feats, torch.tensor([[True, False, False,
                                                                          False]]))
    assert dist_.shape == (1, 1, 4)
    assert pairs[0, 0].tolist() == [False, True, True, True]
    torch.testing.assert_close(dist_[0, 0, 1:], torch.tensor([SQ2, 1e-6, 2.0]))
    # identical features: finite gradient
    feats.requires_grad_(True)
    dist_, pairs = labelled_to_unlabelled_distances(feats, torch.tensor([[1, 0, 0, 0]]).bool())
    dist_[pairs].sum().backward()
    assert torch.isfinite(feats.grad).all()


def test_prototype_bank_ema_only_for_seen_classes():
    bank = PrototypeBank(num_classes=2, dims=2, momentum=0.1, seed=3)
    before = bank.prototypes.clone()
    assert not torch.equal(before[0], before[1])  # independent seeded init (T10)
    assert torch.all(before >= 0)
    feats = torch.tensor([[[2.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
                          [[6.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]])  # (B=2, D=2, N=4)
    masks = torch.zeros(2, 2, 4, dtype=torch.bool)
    masks[0, 0, :2] = True  # image 0 mean of class 0: (3, 0)
    masks[1, 0, 0] = True  # image 1 mean of class 0: (6, 2)
    seen = bank.update(feats, masks)
    assert seen.tolist() == [True, False]
    expected0 = 0.1 * torch.tensor([4.5, 1.0]) + 0.9 * before[0]
    torch.testing.assert_close(bank.prototypes[0], expected0)
    torch.testing.assert_close(bank.prototypes[1], before[1])  # unseen class unchanged
    assert bank.num_updates.tolist() == [1, 0]
    assert 'prototypes' in bank.state_dict() and not list(bank.parameters())
    # a batch without any label changes nothing
    after = bank.prototypes.clone()
    bank.update(feats, torch.zeros_like(masks))
    torch.testing.assert_close(bank.prototypes, after)
    with pytest.raises(ValueError, match='momentum'):
        PrototypeBank(2, 2, momentum=0)


def _dist_bank_worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    bank = PrototypeBank(num_classes=2, dims=1, momentum=0.5, seed=0)
    init = bank.prototypes.clone()
    feats = torch.full((1, 1, 2), float(rank * 4))  # rank 0 sees 0, rank 1 sees 4
    masks = torch.zeros(1, 2, 2, dtype=torch.bool)
    masks[0, 0, 0] = True
    if rank == 1:
        masks[0, 1, 1] = True  # class 1 only on rank 1
    bank.update(feats, masks)
    queue.put((rank, init.tolist(), bank.prototypes.tolist()))
    dist.destroy_process_group()


def test_prototype_bank_synchronised_across_processes():
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = 29611
    procs = [ctx.Process(target=_dist_bank_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (i, p)) for r, i, p in (queue.get(timeout=60) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (init, p0), (_, p1) = results[0], results[1]
    assert p0 == p1  # identical on every process
    # class 0: global mean of per-image means (0 and 4) = 2; class 1: only rank 1's image, 4
    assert p0[0][0] == pytest.approx(0.5 * 2 + 0.5 * init[0][0])
    assert p0[1][0] == pytest.approx(0.5 * 4 + 0.5 * init[1][0])
