"""SEL / PCL / plain heatmap losses against hand-computed values and on degenerate batches."""
import math

import pytest
import torch

from protocal.models.losses import (ExclusiveLoss, PrototypeCalibratedLoss, SemanticEnergyLoss,
                                    SoftCrossEntropyLoss, StretchedFeatureLoss)
from protocal.prototypes import node_masks_from_points

LN2 = math.log(2.0)
LN43 = math.log(4.0 / 3.0)
SQ2 = math.sqrt(2)


def embed_2x2(*vectors):
    """(1, D, 2, 2) embedding from four node vectors in row-major order."""
    return torch.tensor(vectors, dtype=torch.float32).t().reshape(1, -1, 2, 2)


def test_soft_ce_uniform_logits():
    logits = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 1
    loss = SoftCrossEntropyLoss(loss_weight=3.0)(logits, target)['loss_ce']
    assert loss.item() == pytest.approx(3 * LN2, rel=1e-6)
    # padding pixels (valid=False) are excluded from the mean
    target[0, 0, :, 2:] = 0
    valid = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    valid[..., :2] = True
    loss = SoftCrossEntropyLoss()(logits, target, valid_mask=valid)['loss_ce']
    assert loss.item() == pytest.approx(LN2, rel=1e-6)
    with pytest.raises(ValueError, match='same shape'):
        SoftCrossEntropyLoss()(logits, target[:, :1])


def test_soft_ce_probability_floor():
    logits = torch.tensor([[[[0.0]], [[-100.0]]]])  # P_1 ~ e^-100 < 1e-10
    target = torch.tensor([[[[0.0]], [[1.0]]]])
    loss = SoftCrossEntropyLoss()(logits, target)['loss_ce']
    assert loss.item() == pytest.approx(-math.log(1e-10), rel=1e-6)


def test_sel_calibrated_ce_by_hand():
    embed = embed_2x2((1, 0), (0, 1), (1, 0), (-1, 0))
    masks = torch.tensor([[[True, False, False, False]]])
    logits = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 1
    loss = SemanticEnergyLoss(energy_upsample='nearest', sfl=None)
    out = loss(logits, target, embed=embed, node_masks=masks)
    # energies [1, .5, 0, 1] (mean .625) times -ln(1/2) on each pixel, times ce_weight 2
    assert set(out) == {'loss_ce'}
    assert out['loss_ce'].item() == pytest.approx(2 * LN2 * 0.625, rel=1e-6)


def test_sel_sfl_by_hand():
    embed = embed_2x2((1, 0), (0, 1), (1, 0), (-1, 0))
    masks = torch.tensor([[[True, False, False, False]]])
    sfl = StretchedFeatureLoss(tau=10.0, weight_mode='sel', loss_weight=0.05)
    # d(0, .) = sqrt2, 0, 2 for the three unlabelled nodes; w = n / N = 1 / 4
    mean_term = (math.exp(10 - SQ2) + math.exp(10) + math.exp(8)) / 3
    assert sfl(embed, masks).item() == pytest.approx(0.05 * 0.25 * mean_term, rel=1e-5)


def test_pcl_sfl_weight_and_reference_bug():
    embed = torch.randn(1, 3, 2, 2)
    masks = torch.zeros(1, 2, 4, dtype=torch.bool)
    masks[0, 0, 0] = True
    masks[0, 1, 1] = True
    fixed = StretchedFeatureLoss(tau=3.0, weight_mode='pcl')
    compat = StretchedFeatureLoss(tau=3.0, weight_mode='pcl', reference_compat_weight=True)
    torch.testing.assert_close(fixed.image_weights(masks), torch.tensor([2 / (0.05 * 4)]))
    torch.testing.assert_close(compat.image_weights(masks), torch.tensor([1 + 1 / (0.05 * 4)]))
    assert fixed(embed, masks).item() / compat(embed, masks).item() == pytest.approx(
        10 / 6, rel=1e-5)
    with pytest.raises(ValueError, match='weight_mode'):
        StretchedFeatureLoss(weight_mode='other')
    with pytest.raises(ValueError, match='reference_compat_weight'):
        StretchedFeatureLoss(weight_mode='sel', reference_compat_weight=True)


def el_case():
    target = torch.zeros(1, 3, 2, 2)
    target[0, 1, 0, 0] = 0.5
    target[0, 1, 0, 1] = 0.3
    target[0, 2, 0, 1] = 0.2  # discs of both classes overlap here
    target[0, 2, 1, 1] = 1.0
    target[0, 0] = (1 - target[0, 1:].sum(0)).clamp(0, 1)
    return torch.zeros(1, 3, 2, 2), target


def test_exclusive_loss_by_hand():
    logits, target = el_case()
    # pixels in R: (0,0): 2 terms, (0,1): 1 term (H_0 clamped to 0), (1,1): 2 terms; P = 1/3
    loss = ExclusiveLoss(loss_weight=0.2)(logits, target)
    assert loss.item() == pytest.approx(0.2 * 5 * LN43 / 3, rel=1e-6)
    compat = ExclusiveLoss(loss_weight=0.2, reference_compat_negative_bg=True)(logits, target)
    assert compat.item() == pytest.approx(0.2 * 6 * LN43 / 3, rel=1e-6)
    before = target.clone()
    ExclusiveLoss()(logits, target)
    assert torch.equal(before, target)  # T11: target untouched


def pcl_inputs():
    embed = embed_2x2((1, 0), (0, 1), (1, 1), (-1, 0))
    masks = torch.zeros(1, 2, 4, dtype=torch.bool)
    masks[0, 0, 0] = True
    masks[0, 1, 3] = True
    logits = torch.zeros(1, 3, 4, 4)
    target = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return embed, masks, logits, target


def test_pcl_ce_applies_each_channel_energy():
    embed, masks, logits, target = pcl_inputs()
    loss = PrototypeCalibratedLoss(num_classes=2, embed_dims=2, energy_upsample='nearest',
                                   sfl=None, exclusive=None)
    loss.bank.prototypes.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    out = loss(logits, target, embed=embed, node_masks=masks)
    c = 1 / SQ2
    # channel energies per node (see test_prototypes.test_class_energies_by_hand)
    node_energy = torch.tensor([[1, 0.5, 0.5, 1],
                                [1, 0.4, 1 - (0.2 * c + 0.4 * (1 + c)), 1],
                                [1, 0.6, 1 - (0.2 * c + 0.4 * (1 - c)), 1]])
    pixel_energy = node_energy.reshape(3, 2, 2).repeat_interleave(2, 1).repeat_interleave(2, 2)
    # uniform logits over 3 channels: -ln P = ln 3 everywhere
    expected = 2.0 * (target[0] * math.log(3) * pixel_energy).sum(0).mean()
    assert out['loss_ce'].item() == pytest.approx(expected.item(), rel=1e-5)


def test_pcl_total_has_three_terms_and_updates_bank_after_loss():
    embed, masks, logits, target = pcl_inputs()
    loss = PrototypeCalibratedLoss(num_classes=2, embed_dims=2).train()
    before = loss.bank.prototypes.clone()
    out = loss(logits, target, embed=embed, node_masks=masks)
    assert set(out) == {'loss_ce', 'loss_sfl', 'loss_el'}
    assert not torch.equal(before, loss.bank.prototypes)
    # in eval mode (validation) the prototypes are left alone
    loss.eval()
    frozen = loss.bank.prototypes.clone()
    loss(logits, target, embed=embed, node_masks=masks)
    assert torch.equal(frozen, loss.bank.prototypes)


def test_pcl_rejects_mismatched_shapes():
    embed, masks, logits, target = pcl_inputs()
    loss = PrototypeCalibratedLoss(num_classes=3, embed_dims=2)
    with pytest.raises(ValueError, match='3 classes'):
        loss(logits, target, embed=embed, node_masks=masks)
    with pytest.raises(ValueError, match='embedding'):
        PrototypeCalibratedLoss(num_classes=2, embed_dims=5)(logits, target, embed=embed,
                                                            node_masks=masks)
    with pytest.raises(ValueError, match='embeddings'):
        SemanticEnergyLoss()(logits, target)


def degenerate_batch():
    """4 images: no annotation; one class only; duplicates on one pixel; both classes."""
    points = [
        torch.zeros(0, 2),
        torch.tensor([[3.0, 3.0], [12.0, 12.0]]),
        torch.tensor([[5.0, 5.0], [5.0, 5.0], [5.0, 5.0]]),
        torch.tensor([[2.0, 2.0], [13.0, 2.0]]),
    ]
    labels = [
        torch.zeros(0, dtype=torch.long),
        torch.tensor([0, 0]),
        torch.tensor([1, 1, 1]),
        torch.tensor([0, 1]),
    ]
    return points, labels


@pytest.mark.parametrize('subset', [[0], [1], [2], [0, 1], [0, 1, 2, 3]])
@pytest.mark.parametrize('kind', ['sel', 'pcl', 'plain'])
def test_losses_finite_on_degenerate_batches(kind, subset):
    from protocal.codecs import PointHeatmapCodec
    all_points, all_labels = degenerate_batch()
    points = [all_points[i] for i in subset]
    labels = [all_labels[i] for i in subset]
    codec = PointHeatmapCodec(num_classes=2, radius=3)
    target = codec.encode_batch(points, labels, (16, 16))
    masks = node_masks_from_points(points, labels, 2, stride=4, grid_hw=(4, 4))
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(len(subset), 3, 16, 16, generator=gen, requires_grad=True)
    embed = torch.randn(len(subset), 6, 4, 4, generator=gen).requires_grad_(True)
    if kind == 'sel':
        loss = SemanticEnergyLoss()
    elif kind == 'pcl':
        loss = PrototypeCalibratedLoss(num_classes=2, embed_dims=6).train()
    else:
        loss = SoftCrossEntropyLoss()
    before = loss.bank.prototypes.clone() if kind == 'pcl' else None
    out = loss(logits, target, embed=embed, node_masks=masks)
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(logits.grad).all()
    if embed.grad is not None:
        assert torch.isfinite(embed.grad).all()
    if kind == 'pcl':
        seen = masks.any(-1).any(0)
        for c in range(2):
            changed = not torch.equal(before[c], loss.bank.prototypes[c])
            assert changed == bool(seen[c])  # unseen classes keep their prototype


def test_losses_decrease_when_optimised():
    """A few Adam steps on free logits/embeddings reduce every calibrated loss."""
    from protocal.codecs import PointHeatmapCodec
    points, labels = degenerate_batch()
    codec = PointHeatmapCodec(num_classes=2, radius=3)
    target = codec.encode_batch(points, labels, (16, 16))
    masks = node_masks_from_points(points, labels, 2, stride=4, grid_hw=(4, 4))
    for loss in (SemanticEnergyLoss(sfl=dict(type='StretchedFeatureLoss', tau=3.0)),
                 PrototypeCalibratedLoss(num_classes=2, embed_dims=6)):
        gen = torch.Generator().manual_seed(2)
        logits = torch.randn(4, 3, 16, 16, generator=gen).requires_grad_(True)
        embed = torch.randn(4, 6, 4, 4, generator=gen).requires_grad_(True)
        optim = torch.optim.Adam([logits, embed], lr=0.05)
        values = []
        for _ in range(30):
            optim.zero_grad()
            total = sum(loss(logits, target, embed=embed, node_masks=masks).values())
            total.backward()
            optim.step()
            values.append(total.item())
        assert values[-1] < 0.7 * values[0]
