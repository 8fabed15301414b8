"""Dice / HD95 / ASD / ASSD: hand values, brute-force agreement, empty-mask conventions, metric."""
import math

import numpy as np
import pytest
import torch

from protocal.evaluation.functional.seg_distances import (binary_seg_metrics, surface,
                                                          surface_distances)
from protocal.evaluation.metrics.seg_dice_hd_metric import DiceHD95Metric


def _brute(pred, gt, spacing=(1.0, 1.0), q=95):
    """medpy definitions by explicit pairwise distances (independent of the EDT)."""
    sp = np.asarray(spacing)
    ps = np.argwhere(surface(pred)) * sp
    gs = np.argwhere(surface(gt)) * sp
    d = np.sqrt(((ps[:, None, :] - gs[None, :, :]) ** 2).sum(-1))
    d_pg, d_gp = d.min(1), d.min(0)
    return np.percentile(np.concatenate([d_pg, d_gp]), q), d_pg.mean(), (d_pg.mean() +
                                                                         d_gp.mean()) / 2


def test_hand_values_single_pixels_and_identity():
    gt = np.zeros((5, 5), bool)
    gt[2, 2] = True
    pred = np.zeros((5, 5), bool)
    pred[2, 3] = True
    m = binary_seg_metrics(pred, gt)
    assert m == dict(dice=0.0, hd95=1.0, asd=1.0, assd=1.0)
    square = np.zeros((6, 6), bool)
    square[1:4, 1:4] = True
    m = binary_seg_metrics(square, square)
    assert m['dice'] == 1.0 and m['hd95'] == 0.0 and m['asd'] == 0.0
    # 3x3 square vs the same square shifted right by 2: Dice = 2*3/18
    shifted = np.roll(square, 2, axis=1)
    m = binary_seg_metrics(shifted, square)
    assert m['dice'] == pytest.approx(6 / 18)
    assert m['hd95'] == pytest.approx(2.0)


def test_agrees_with_brute_force_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred = rng.random((20, 24)) > 0.7
        gt = rng.random((20, 24)) > 0.6
        for spacing in [(1.0, 1.0), (2.0, 0.5)]:
            m = binary_seg_metrics(pred, gt, spacing=spacing)
            hd, asd, assd = _brute(pred, gt, spacing)
            assert m['hd95'] == pytest.approx(hd)
            assert m['asd'] == pytest.approx(asd)
            assert m['assd'] == pytest.approx(assd)


def test_3d_volume_distances():
    gt = np.zeros((3, 6, 6), bool)
    gt[1, 2:4, 2:4] = True
    pred = np.zeros_like(gt)
    pred[2, 2:4, 2:4] = True
    d = surface_distances(pred, gt, spacing=(5.0, 1.0, 1.0))
    assert np.allclose(d, 5.0)


def test_empty_conventions():
    empty = np.zeros((3, 4), bool)
    full = np.zeros((3, 4), bool)
    full[1, 1] = True
    diagonal = math.hypot(3, 4)
    assert binary_seg_metrics(empty, empty) == dict(dice=1.0, hd95=0.0, asd=0.0, assd=0.0)
    m = binary_seg_metrics(empty, full)
    assert m == dict(dice=0.0, hd95=diagonal, asd=diagonal, assd=diagonal)
    assert binary_seg_metrics(full, empty)['hd95'] == diagonal
    m = binary_seg_metrics(empty, full, empty='nan')
    assert m['dice'] == 0.0 and math.isnan(m['hd95'])
    assert binary_seg_metrics(empty, full, empty='reference') == dict(dice=0.0, hd95=0.0,
                                                                       asd=0.0, assd=0.0)
    assert binary_seg_metrics(empty, empty, empty='reference')['dice'] == 0.0
    with pytest.raises(ValueError, match='empty'):
        binary_seg_metrics(empty, full, empty='zero')
    with pytest.raises(ValueError, match='shape'):
        binary_seg_metrics(empty, full[:2])


def _sample(pred, gt, **meta):
    return dict(pred_sem_seg=dict(data=torch.as_tensor(pred)[None]),
                gt_sem_seg=dict(data=torch.as_tensor(gt)[None]), **meta)


def test_metric_per_image_all_background_prediction_defined():
    metric = DiceHD95Metric()
    metric.dataset_meta = dict(classes=('background', 'nucleus'))
    gt = np.zeros((4, 4), np.int64)
    gt[1:3, 1:3] = 1
    metric.process({}, [_sample(gt, gt), _sample(np.zeros_like(gt), gt)])
    out = metric.compute_metrics(metric.results)
    assert out['Dice.nucleus'] == pytest.approx(0.5)
    assert out['mDice'] == pytest.approx(0.5)
    assert out['mHD95'] == pytest.approx(math.hypot(4, 4) / 2)
    assert all(np.isfinite(v) for v in out.values())


def test_metric_ignore_index_and_regions():
    metric = DiceHD95Metric(classes=[1], regions={'disc': [1, 2]})
    metric.dataset_meta = dict(classes=('bg', 'cup', 'rim'))
    gt = np.array([[1, 2, 255, 0]])
    pred = np.array([[1, 1, 1, 0]])
    metric.process({}, [_sample(pred, gt)])
    out = metric.compute_metrics(metric.results)
    assert out['Dice.cup'] == pytest.approx(2 * 1 / (2 + 1))  # ignored pixel excluded
    assert out['Dice.disc'] == pytest.approx(1.0)


def test_metric_volume_mode_groups_slices():
    metric = DiceHD95Metric(mode='volume')
    metric.dataset_meta = dict(classes=('background', 'organ'))
    gt = np.zeros((4, 4), np.int64)
    gt[1:3, 1:3] = 1
    metric.process({}, [
        _sample(gt, gt, volume_id='a', slice_index=0),
        _sample(np.zeros_like(gt), np.zeros_like(gt), volume_id='a', slice_index=1),
        _sample(np.zeros_like(gt), gt, volume_id='b', slice_index=0)
    ])
    out = metric.compute_metrics(metric.results)
    assert out['Dice.organ'] == pytest.approx(0.5)  # volume a perfect, volume b empty prediction
    metric = DiceHD95Metric(mode='volume')
    metric.dataset_meta = dict(classes=('background', 'organ'))
    with pytest.raises(KeyError, match='volume_id'):
        metric.process({}, [_sample(gt, gt)])
