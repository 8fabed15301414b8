"""LPD formulas against hand-computed values on tiny tensors (L_div, L_sim, L_cls, metric)."""
import math

import numpy as np
import pytest
import torch

from protocal.evaluation.metrics.wsss_iou_metric import (WSSSIoUMetric, confusion_matrix,
                                                         wsss_scores)
from protocal.models.losses.lpd import (MultiStageBCELoss, PrototypeDiversityLoss,
                                        PrototypeInfoNCELoss, info_nce_bg, info_nce_fg,
                                        jeffreys_similarity)
from protocal.prototypes import expand_parent_labels, merge_subclasses, prototype_cam

A = math.e / (math.e + 1)  # softmax([1, 0])[0]
B = 1 / (math.e + 1)


def _two_pixel_case():
    # pixels f1 = (1, 0), f2 = (0, 1); prototypes P0 = (1, 0), P1 = (0, 1)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).t().reshape(1, 2, 1, 2)  # (B, D, h, w)
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return feats, protos


def test_jeffreys_divergence_hand_computed():
    # v0 = softmax([1, 0]) = (a, b), v1 = (b, a); KL(v0||v1) = (a - b) ln(a / b) = a - b
    # J = 2 (a - b); S = exp(-J)
    dists = torch.tensor([[A, B], [B, A]], dtype=torch.float64)
    expected = math.exp(-2 * (A - B))
    assert abs(float(jeffreys_similarity(dists)) - expected) < 1e-8
    assert abs(expected - 0.39682) < 1e-4
    # identical distributions: J = 0, S = 1; one prototype: 0
    assert abs(float(jeffreys_similarity(torch.full((3, 4), 0.25))) - 1) < 1e-6
    assert float(jeffreys_similarity(torch.tensor([[0.5, 0.5]]))) == 0


def test_diversity_loss_hand_computed_and_batch_mean():
    feats, protos = _two_pixel_case()
    loss = PrototypeDiversityLoss(num_per_class=2, loss_weight=1.0)
    mask = torch.ones(1, 1, 2, dtype=torch.long)  # both pixels class 0 (value c + 1 = 1)
    expected = math.exp(-2 * (A - B))
    assert abs(float(loss(feats, protos, mask)) - expected) < 1e-5
    # a second image with no class counts in B: L = sum_b L_b / B
    feats2 = torch.cat([feats, feats])
    mask2 = torch.cat([mask, torch.zeros_like(mask)])
    assert abs(float(loss(feats2, protos, mask2)) - expected / 2) < 1e-5


def test_diversity_reference_compat_switches():
    feats, protos = _two_pixel_case()
    mask = torch.ones(1, 1, 2, dtype=torch.long)
    # double softmax: v' = softmax(v) -> (s, 1 - s) with s = sigmoid(a - b); J = 2 (2s - 1)(a - b)
    s = 1 / (1 + math.exp(-(A - B)))
    expected = math.exp(-2 * (2 * s - 1) * (A - B))
    double = PrototypeDiversityLoss(num_per_class=2, loss_weight=1.0,
                                    reference_compat_double_softmax=True)
    assert abs(float(double(feats, protos, mask)) - expected) < 1e-5
    assert expected > 0.8  # nearly saturated, as the spec warns
    # label offset: with two classes, mask value 1 is class 0 (fixed) but class 1 (reference bug)
    protos4 = torch.cat([protos, protos])  # class 0 -> rows 0,1 ; class 1 -> rows 2,3
    fixed = PrototypeDiversityLoss(num_per_class=2, loss_weight=1.0)
    buggy = PrototypeDiversityLoss(num_per_class=2, loss_weight=1.0,
                                   reference_compat_label_offset=True)
    bg_mask = torch.zeros(1, 1, 2, dtype=torch.long)  # all background
    assert float(fixed(feats, protos4, bg_mask)) == 0  # background regularises nothing
    assert float(buggy(feats, protos4, bg_mask)) > 0.3  # reference: group 0 on background


def test_diversity_absent_classes_finite_with_gradient():
    torch.manual_seed(0)
    feats = torch.randn(2, 8, 4, 4, requires_grad=True)
    protos = torch.randn(6, 8, requires_grad=True)  # 3 classes x 2
    loss_fn = PrototypeDiversityLoss(num_per_class=2)
    for mask in (torch.zeros(2, 4, 4, dtype=torch.long),  # no class anywhere
                 torch.full((2, 4, 4), 3, dtype=torch.long)):  # only the last class
        loss = loss_fn(feats, protos, mask)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(protos.grad).all() and torch.isfinite(feats.grad).all()
        protos.grad = None
        feats.grad = None
    # zero features / prototypes: cosine 0, no NaN
    zero = loss_fn(torch.zeros(1, 8, 4, 4), torch.zeros(6, 8), torch.ones(1, 4, 4).long())
    assert torch.isfinite(zero)


def test_diversity_corr_variant():
    torch.manual_seed(0)
    feats = torch.randn(1, 4, 8, 8)
    mask = torch.ones(1, 8, 8, dtype=torch.long)
    corr = PrototypeDiversityLoss(num_per_class=2, variant='corr', loss_weight=1.0)
    same = torch.randn(1, 4).repeat(2, 1)
    # identical maps: unit columns, G_01 = 1 / N (the spec's G = A^T A / N), loss = 1 / N^2
    assert abs(float(corr(feats, same, mask)) - 1 / 64**2) < 1e-7
    with pytest.raises(ValueError, match='variant'):
        PrototypeDiversityLoss(variant='kl')


def test_info_nce_hand_computed():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    emb = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([0])
    # logits = (1, 0) / 0.5 = (2, 0): L_fg = log(1 + e^-2), L_bg = log(1 + e^2)
    assert abs(float(info_nce_fg(emb, protos, pos, 0.5)) - math.log(1 + math.exp(-2))) < 1e-6
    assert abs(float(info_nce_bg(emb, protos, pos, 0.5)) - math.log(1 + math.exp(2))) < 1e-5
    loss = PrototypeInfoNCELoss(temperature=0.5, activation_weight=0.01, loss_weight=1.0)
    cam = torch.full((1, 2, 2, 2), 2.0)
    expected = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2)) + 0.01 * 2.0
    assert abs(float(loss(emb, emb, protos, pos, activation=cam)) - expected) < 1e-5
    # scale invariance (vectors are normalised) and the spec's weight
    assert abs(float(info_nce_fg(3 * emb, 5 * protos, pos, 0.5)) -
               math.log(1 + math.exp(-2))) < 1e-6
    assert PrototypeInfoNCELoss().loss_weight == 0.1
    # no selected pair: 0 with a graph
    p = protos.clone().requires_grad_(True)
    zero = loss(emb[:0], emb[:0], p, pos[:0])
    zero.backward()
    assert float(zero.detach()) == 0 and torch.isfinite(p.grad).all()


def test_multistage_bce_weights():
    logits = [torch.zeros(1, 2) for _ in range(4)]
    labels = torch.tensor([[1.0, 0.0]])
    loss = MultiStageBCELoss(stage_weights=(0.0, 0.1, 1.0, 1.0))
    assert abs(float(loss(logits, labels)) - 2.1 * math.log(2)) < 1e-6


def test_subclass_merges_and_cam():
    z = torch.tensor([[1.0, 3.0, 0.0, 0.0]])  # 2 classes x 2 prototypes
    assert torch.allclose(merge_subclasses(z, 2, 'mean'), torch.tensor([[2.0, 0.0]]))
    w = torch.softmax(torch.tensor([1.0, 3.0]), 0)
    smax = float((w * torch.tensor([1.0, 3.0])).sum())
    assert torch.allclose(merge_subclasses(z, 2, 'max'), torch.tensor([[smax, 0.0]]))
    assert torch.allclose(merge_subclasses(z, [1, 3], 'mean'),
                          torch.tensor([[1.0, 1.0]]))
    assert expand_parent_labels(torch.tensor([[1.0, 0.0]]), 2).tolist() == [[1, 1, 0, 0]]
    feats = torch.tensor([[3.0, 0.0]]).t().reshape(1, 2, 1, 1)
    cam = prototype_cam(feats, torch.tensor([[2.0, 0.0], [0.0, 1.0]]), 10.0)
    assert torch.allclose(cam.flatten(), torch.tensor([10.0, 0.0]))


def test_wsss_metric_hand_computed():
    # classes A, B, BG (last). H[gt, pred] = [[1,1,0],[0,1,0],[1,0,2]]
    gt = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 2])
    hist = confusion_matrix(pred, gt, 3)
    assert hist.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    s = wsss_scores(hist)
    assert np.allclose(s['iou'], [1 / 3, 1 / 2, 2 / 3])
    assert abs(s['mIoU'] - 5 / 12) < 1e-9  # tissue classes only (mmseg's mean would be 1/2)
    assert abs(s['mDice'] - (0.5 + 2 / 3) / 2) < 1e-9
    assert abs(s['FwIoU'] - (2 / 6 / 3 + 1 / 6 / 2 + 3 / 6 * 2 / 3)) < 1e-9
    # the registered metric: one dataset-level matrix over two images (not a per-image mean)
    metric = WSSSIoUMetric()
    metric.dataset_meta = dict(classes=('A', 'B', 'BG'))
    for sl in (slice(0, 3), slice(3, 6)):
        metric.process({}, [dict(pred_sem_seg=dict(data=torch.tensor(pred[sl])[None, None]),
                                 gt_sem_seg=dict(data=torch.tensor(gt[sl])[None, None]))])
    out = metric.compute_metrics(metric.results)
    assert out['mIoU'] == round(500 / 12, 2) and out['IoU.BG'] == round(200 / 3, 2)
    # background GT predicted as A is an A false positive; GT values >= L are ignored
    assert confusion_matrix(np.array([0, 0]), np.array([2, 7]), 3).tolist() == [
        [0, 0, 0], [0, 0, 0], [1, 0, 0]]
