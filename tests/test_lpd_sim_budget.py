"""LPD L_sim cost knobs: one batched frozen-encoder call, the per-image pair budget (unbiased
weights), exactness when the budget covers every selected pair, and empty selections."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from test_lpd_model import TINY_MIT, _samples  # the tiny MiT and label samples of the LPD tests

from protocal.models.losses.lpd import PrototypeInfoNCELoss


@pytest.fixture(autouse=True)
def _mmseg_scope():
    init_default_scope('mmseg')
    yield


def _model(**kw):
    cfg = dict(type='LPDSegmentor', backbone=dict(TINY_MIT),
               head=dict(type='LearnablePrototypeCAMHead', num_classes=3, num_prototypes=4,
                         in_channels=[8, 16, 32, 64], proto_dim=64),
               loss_sim=dict(type='PrototypeInfoNCELoss'),
               frozen_encoder=dict(backbone=dict(TINY_MIT), embed_dims=64, input_size=(32, 32)),
               warmup_iters=0,
               data_preprocessor=dict(type='SegDataPreProcessor', mean=[128] * 3, std=[64] * 3))
    cfg.update(kw)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match='no checkpoint'):
        return MODELS.build(cfg)


def test_batched_encoder_call_equals_two_calls():
    model = _model()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    cam4 = torch.randn(2, 12, 4, 4, requires_grad=True)
    b_idx, k_idx = torch.tensor([0, 0, 1]), torch.tensor([1, 5, 9])
    fg1, bg1 = model._encode_masked(x, cam4, b_idx, k_idx, batched=True)
    fg2, bg2 = model._encode_masked(x, cam4, b_idx, k_idx, batched=False)
    assert fg1.shape == bg1.shape == (3, 64)
    assert torch.allclose(fg1, fg2, atol=1e-5, rtol=1e-5)
    assert torch.allclose(bg1, bg2, atol=1e-5, rtol=1e-5)
    # gradients reach the CAM through the masked images, identically; never the frozen weights
    g1 = torch.autograd.grad((fg1 * bg1.detach()).sum() + bg1.pow(2).sum(), cam4)[0]
    g2 = torch.autograd.grad((fg2 * bg2.detach()).sum() + bg2.pow(2).sum(), cam4)[0]
    assert g1.abs().sum() > 0 and torch.allclose(g1, g2, atol=1e-5, rtol=1e-4)
    assert all(not p.requires_grad for p in model.frozen_encoder.parameters())


def _selection():
    sel = torch.zeros(3, 12, dtype=torch.bool)
    sel[0, [0, 2, 3, 7, 9]] = True  # 5 pairs
    sel[1, [4]] = True  # 1 pair
    return sel  # image 2: none


def test_pair_budget_counts_weights_and_determinism():
    model = _model(sim_pairs_per_image=2)
    sel = _selection()
    torch.manual_seed(3)
    b, k, w = model._sample_sim_pairs(sel)
    assert torch.bincount(b, minlength=3).tolist() == [2, 1, 0]
    assert sel[b, k].all() and len(set(zip(b.tolist(), k.tolist()))) == 3
    # image 0: 5 pairs, 2 kept, each 5 / (2 * 6); image 1: its pair 1 / 6; sum 1
    assert torch.allclose(w, torch.tensor([5 / 12, 5 / 12, 1 / 6], dtype=torch.float64))
    assert model.last_sim_pairs == (6, 3)
    torch.manual_seed(3)
    b2, k2, w2 = model._sample_sim_pairs(sel)
    assert torch.equal(b, b2) and torch.equal(k, k2) and torch.equal(w, w2)
    picks = set()
    for seed in range(20):
        torch.manual_seed(seed)
        picks.add(tuple(model._sample_sim_pairs(sel)[1].tolist()))
    assert len(picks) > 1  # random subsets, not the first pairs
    # budget covering every image: all pairs, no weights (the plain mean)
    model.sim_pairs_per_image = 5
    b, k, w = model._sample_sim_pairs(sel)
    assert w is None and torch.equal(torch.stack([b, k]), torch.stack(sel.nonzero(as_tuple=True)))
    # the batch cap on top keeps the expected weights: M / m scaling
    model.sim_pairs_per_image, model.max_sim_pairs = 2, 2
    torch.manual_seed(0)
    b, k, w = model._sample_sim_pairs(sel)
    assert b.numel() == 2 and w is not None
    assert set(w.tolist()) <= {5 / 12 * 1.5, 1 / 6 * 1.5}


def test_pair_budget_is_unbiased_in_expectation():
    """Each selected pair's kept-probability x weight is 1 / N (checked empirically, seeded)."""
    model = _model(sim_pairs_per_image=2)
    sel = _selection()
    total = torch.zeros(3, 12, dtype=torch.float64)
    torch.manual_seed(0)
    draws = 3000
    for _ in range(draws):
        b, k, w = model._sample_sim_pairs(sel)
        total[b, k] += w
    expected = sel.double() / int(sel.sum())
    assert torch.allclose(total / draws, expected, atol=0.01)


def test_budget_covering_all_pairs_gives_the_full_loss_exactly():
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    samples = _samples([[1, 1, 0], [0, 1, 1]])
    model = _model()
    torch.manual_seed(5)
    full = model.loss(x, samples)['loss_sim']
    selected, used = model.last_sim_pairs
    assert selected == used > 0
    model.sim_pairs_per_image = 8  # K = 4 per class, 2 classes per image: >= every count
    torch.manual_seed(5)
    budget = model.loss(x, samples)['loss_sim']
    assert model.last_sim_pairs == (selected, selected)
    assert torch.equal(full, budget)
    # a smaller budget encodes fewer pairs and stays finite
    model.sim_pairs_per_image = 1
    small = model.loss(x, samples)['loss_sim']
    assert model.last_sim_pairs == (selected, 2) and torch.isfinite(small)


def test_no_pair_selected_is_finite():
    model = _model(sim_pairs_per_image=1)
    x = torch.randn(2, 3, 64, 64)
    losses = model.loss(x, _samples([[0, 0, 0], [0, 0, 0]]))  # no class: nothing selected
    assert model.last_sim_pairs == (0, 0)
    assert float(losses['loss_sim'].detach()) == 0.0
    sum(losses.values()).backward()
    assert torch.isfinite(model.head.prototypes.grad).all()


def test_weighted_info_nce_and_bad_budget():
    loss = PrototypeInfoNCELoss(loss_weight=1.0, activation_weight=0)
    torch.manual_seed(0)
    fg, bg, protos = torch.randn(3, 8), torch.randn(3, 8), torch.randn(4, 8)
    pos = torch.tensor([0, 2, 3])
    plain = loss(fg, bg, protos, pos)
    assert torch.allclose(loss(fg, bg, protos, pos, weights=torch.full((3, ), 1 / 3)), plain)
    with pytest.raises(ValueError, match='weights'):
        loss(fg, bg, protos, pos, weights=torch.ones(2))
    with pytest.raises(ValueError, match='sim_pairs_per_image'):
        _model(sim_pairs_per_image=0)


def test_budget_configs():
    paper = Config.fromfile('configs/lpd/lpd_mit-b1_8e_bcss-wsss-k10.py').model
    assert paper.get('sim_pairs_per_image') is None and paper.get('max_sim_pairs') is None
    assert paper.frozen_encoder.get('input_size') is None  # paper-faithful: all pairs, 224 px
    budget = Config.fromfile('configs/lpd/lpd-budget_mit-b1_8e_bcss-wsss-k10.py').model
    assert budget.sim_pairs_per_image >= 1 and budget.head.num_prototypes == 10
    demo = Config.fromfile('configs/lpd/lpd_mit-b0_demo-cpu_ebhi.py').model
    assert demo.sim_pairs_per_image == budget.sim_pairs_per_image
