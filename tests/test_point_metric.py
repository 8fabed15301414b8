"""Point matching and PointF1Metric, checked on hand-computed cases."""
import numpy as np
import pytest
import torch
from mmdet.registry import METRICS
from mmdet.structures import DetDataSample
from mmengine.evaluator import Evaluator
from mmengine.structures import InstanceData

from protocal.evaluation.metrics import PointF1Metric
from protocal.evaluation.functional import (count_matches, match_counts, match_points,
                                            match_points_by_class, points_to_original)

# ----------------------------------------------------------------------------------- matching


def pairs(result):
    return sorted(zip(result[0].tolist(), result[1].tolist()))


def test_equidistant_prediction_takes_lower_gt_index_greedy():
    # one prediction exactly between two GT points: greedy takes the lower GT index, every
    # method finds one match and the other GT point stays a false negative
    pred, gt = [[0.0, 0.0]], [[5.0, 0.0], [-5.0, 0.0]]
    assert pairs(match_points(pred, gt, 6, 'greedy')) == [(0, 0)]
    for method in ('bipartite', 'hungarian'):
        assert len(match_points(pred, gt, 6, method)[0]) == 1
    assert match_counts(pred, gt, 6, 'greedy') == (1, 0, 1)


def test_chain_greedy_finds_fewer_matches_than_optimal():
    # pred0 is nearest to gt0 (4 px) but could also take gt1 (5 px); pred1 only reaches gt0 (6 px)
    pred = [[0.0, 0.0], [10.0, 0.0]]
    gt = [[4.0, 0.0], [-5.0, 0.0]]
    # pred0 first (higher score): it takes gt0, pred1 is left without a partner
    assert pairs(match_points(pred, gt, 6, 'greedy', scores=[0.9, 0.5])) == [(0, 0)]
    # pred1 first: both match
    assert pairs(match_points(pred, gt, 6, 'greedy', scores=[0.5, 0.9])) == [(0, 1), (1, 0)]
    # no scores: input order
    assert pairs(match_points(pred, gt, 6, 'greedy')) == [(0, 0)]
    assert pairs(match_points(pred, gt, 6, 'bipartite', strict=False)) == [(0, 1), (1, 0)]
    assert pairs(match_points(pred, gt, 6, 'hungarian')) == [(0, 1), (1, 0)]


def test_hungarian_minimises_distance_among_maximum_matchings():
    # two GT points, two predictions; both pairings are complete, the crossed one is longer
    pred = [[0.0, 0.0], [10.0, 0.0]]
    gt = [[1.0, 0.0], [9.0, 0.0]]
    assert pairs(match_points(pred, gt, 20, 'hungarian')) == [(0, 0), (1, 1)]
    # ... but never at the cost of a match: pred0 -> gt1 is forced when pred1 only reaches gt0
    pred = [[0.0, 0.0], [-6.0, 0.0]]
    gt = [[-1.0, 0.0], [5.0, 0.0]]
    assert pairs(match_points(pred, gt, 5.5, 'hungarian')) == [(0, 1), (1, 0)]


@pytest.mark.parametrize('method,strict,expected', [
    ('bipartite', None, 0),   # reference: d < r
    ('bipartite', False, 1),
    ('greedy', None, 1),      # OCELOT: d <= r
    ('greedy', True, 0),
    ('hungarian', None, 1),
])
def test_radius_boundary(method, strict, expected):
    # 9-12-15 triangle: the distance is exactly 15
    pred, gt = [[0.0, 0.0]], [[9.0, 12.0]]
    assert len(match_points(pred, gt, 15, method, strict=strict)[0]) == expected


def test_empty_inputs_and_bad_input():
    for method in ('bipartite', 'hungarian', 'greedy'):
        p, g = match_points(np.zeros((0, 2)), [[1.0, 1.0]], 15, method)
        assert p.shape == (0, ) and g.shape == (0, )
        p, g = match_points([[1.0, 1.0]], np.zeros((0, 2)), 15, method)
        assert p.shape == (0, )
    assert count_matches(3, 2, np.array([0])) == (1, 2, 1)
    with pytest.raises(ValueError, match='shape'):
        match_points(np.zeros((3, 3)), np.zeros((1, 2)), 15)
    with pytest.raises(ValueError, match='NaN'):
        match_points([[np.nan, 1.0]], [[1.0, 1.0]], 15)
    with pytest.raises(ValueError, match='radius'):
        match_points([[1.0, 1.0]], [[1.0, 1.0]], 0)
    with pytest.raises(ValueError, match='method'):
        match_points([[1.0, 1.0]], [[1.0, 1.0]], 15, 'nearest')
    with pytest.raises(ValueError, match='scores'):
        match_points([[1.0, 1.0]], [[1.0, 1.0]], 15, 'greedy', scores=[0.1, 0.2])


def test_methods_agree_with_brute_force_on_random_scenes():
    from scipy.optimize import linear_sum_assignment
    rng = np.random.default_rng(0)
    for _ in range(100):
        m, n = rng.integers(0, 9, 2)
        pred, gt = rng.uniform(0, 30, (m, 2)), rng.uniform(0, 30, (n, 2))
        bip = match_points(pred, gt, 8, 'bipartite', strict=False)
        hun = match_points(pred, gt, 8, 'hungarian')
        gre = match_points(pred, gt, 8, 'greedy', scores=rng.random(m))
        best = 0
        if m and n:
            dist = np.linalg.norm(pred[:, None] - gt[None], axis=2)
            cost = np.where(dist <= 8, dist, 1e6)
            r, c = linear_sum_assignment(cost)
            ok = cost[r, c] < 1e6
            best = int(ok.sum())
            assert np.isclose(dist[hun].sum(), cost[r, c][ok].sum())
            for p, g in (bip, hun, gre):
                assert (dist[p, g] <= 8).all()
        assert len(bip[0]) == len(hun[0]) == best
        assert len(gre[0]) <= best
        for p, g in (bip, hun, gre):  # one-to-one
            assert len(set(p.tolist())) == len(p) and len(set(g.tolist())) == len(g)


def test_match_by_class_never_crosses_labels():
    pred = [[0.0, 0.0], [50.0, 0.0]]
    gt = [[1.0, 0.0], [51.0, 0.0]]
    p, g = match_points_by_class(pred, [0, 1], gt, [1, 1], 15)
    assert pairs((p, g)) == [(1, 1)]


def test_points_to_original():
    # pixel-centre convention of protocal.structures: x = (x' + 0.5) / s - 0.5
    pts = np.array([[9.5, 19.5]])
    assert np.allclose(points_to_original(pts, (2.0, 4.0)), [[4.5, 4.5]])
    assert np.allclose(points_to_original(pts, (1.0, 1.0)), pts)
    with pytest.raises(ValueError, match='scale_factor'):
        points_to_original(pts, (0.0, 1.0))


# ------------------------------------------------------------------------------------- metric


def sample(pred=(), gt=(), pred_labels=None, gt_labels=None, scores=None, annotated=None,
           **meta):
    """A ``DetDataSample.to_dict()``-like dict, as the evaluator hands it to ``process``."""
    pred = np.asarray(pred, np.float32).reshape(-1, 2)
    gt = np.asarray(gt, np.float32).reshape(-1, 2)
    pred_labels = np.zeros(len(pred), np.int64) if pred_labels is None else pred_labels
    gt_labels = np.zeros(len(gt), np.int64) if gt_labels is None else gt_labels
    scores = np.linspace(1.0, 0.5, len(pred)) if scores is None else scores
    gt_inst = dict(points=torch.from_numpy(gt), labels=torch.as_tensor(gt_labels))
    if annotated is not None:
        gt_inst['annotated'] = torch.as_tensor(annotated, dtype=torch.bool)
    out = dict(img_path=meta.pop('img_path', 'img.png'),
               pred_instances=dict(points=torch.from_numpy(pred),
                                   labels=torch.as_tensor(pred_labels),
                                   scores=torch.as_tensor(scores, dtype=torch.float32)),
               gt_instances=gt_inst)
    out.update(meta)
    return out


def evaluate(samples, classes=('tumor', ), **kwargs):
    metric = PointF1Metric(classes=classes, **kwargs)
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


# image A: 3 GT, 3 predictions, 2 matched (one at 14 px)
IMG_A = sample(pred=[[12, 10], [50, 24], [200, 200]], gt=[[10, 10], [50, 10], [90, 10]])
# image B: 2 GT, 1 prediction, matched
IMG_B = sample(pred=[[10, 10]], gt=[[10, 10], [40, 40]])


def test_reference_mode_is_f1_of_mean_precision_and_recall():
    res = evaluate([IMG_A, IMG_B], mode='reference')
    p, r = (2 / 3 + 1) / 2, (2 / 3 + 1 / 2) / 2
    assert res['tumor_precision'] == pytest.approx(5 / 6)
    assert res['tumor_recall'] == pytest.approx(7 / 12)
    assert res['tumor_f1'] == pytest.approx(2 * p * r / (p + r))
    assert res['tumor_f1'] == pytest.approx(35 / 51)
    assert res['mF1'] == pytest.approx(35 / 51)


def test_ocelot_mode_pools_counts():
    res = evaluate([IMG_A, IMG_B], mode='ocelot')
    assert res['tumor_precision'] == pytest.approx(3 / 4)
    assert res['tumor_recall'] == pytest.approx(3 / 5)
    assert res['tumor_f1'] == pytest.approx(2 / 3)
    assert res['det_f1'] == pytest.approx(2 / 3)
    assert evaluate([IMG_A, IMG_B], mode='hungarian')['tumor_f1'] == pytest.approx(2 / 3)
    # aggregation can be overridden
    ref_pooled = evaluate([IMG_A, IMG_B], mode='reference', aggregation='dataset')
    assert ref_pooled['tumor_f1'] == pytest.approx(2 / 3)


def test_mode_boundary_conventions():
    img = sample(pred=[[115, 100]], gt=[[100, 100]])  # exactly 15 px
    assert evaluate([img], mode='reference')['tumor_f1'] == 0.0  # d < 15
    assert evaluate([img], mode='ocelot')['tumor_f1'] == 1.0  # d <= 15
    assert evaluate([img], mode='reference', strict=False)['tumor_f1'] == 1.0


def test_ocelot_greedy_by_score_and_bug_compat_input_order():
    img = sample(pred=[[0, 0], [10, 0]], gt=[[4, 0], [-5, 0]], scores=[0.5, 0.9])
    assert evaluate([img], mode='ocelot', radius=6)['tumor_recall'] == 1.0
    # the official code sorts by the class id: input order, pred0 first, one match only
    assert evaluate([img], mode='ocelot', radius=6, bug_compat=True)['tumor_recall'] == 0.5
    # optimal matching does not depend on scores
    assert evaluate([img], mode='hungarian', radius=6)['tumor_recall'] == 1.0


def test_reference_counts_match_to_gt_index_zero_unless_bug_compat():
    # T13: the reference counts np.where(res > 0) and drops the match to GT index 0
    img = sample(pred=[[1, 0], [101, 0]], gt=[[0, 0], [100, 0]])
    fixed = evaluate([img], mode='reference')
    assert fixed['tumor_precision'] == 1.0 and fixed['tumor_recall'] == 1.0
    compat = evaluate([img], mode='reference', bug_compat=True)
    assert compat['tumor_precision'] == 0.5 and compat['tumor_recall'] == 0.5


# X: matched; Y: predictions but no GT; Z: GT but no predictions; W: empty
IMG_X = sample(pred=[[10, 10]], gt=[[10, 10]])
IMG_Y = sample(pred=[[10, 10], [50, 50]], gt=[])
IMG_Z = sample(pred=[], gt=[[10, 10], [50, 50]])
IMG_W = sample(pred=[], gt=[])


def test_empty_image_conventions_reference():
    res = evaluate([IMG_X, IMG_Y, IMG_Z, IMG_W], mode='reference')
    # precision over X, Y, Z (W excluded): (1 + 0 + 0) / 3; recall over X, Z: (1 + 0) / 2
    assert res['tumor_precision'] == pytest.approx(1 / 3)
    assert res['tumor_recall'] == pytest.approx(1 / 2)
    assert res['tumor_f1'] == pytest.approx(2 / 5)
    # the empty image changes nothing
    assert evaluate([IMG_X, IMG_Y, IMG_Z], mode='reference') == res


def test_empty_image_conventions_pooled_and_all_empty():
    res = evaluate([IMG_X, IMG_Y, IMG_Z, IMG_W], mode='ocelot')
    assert res['tumor_precision'] == pytest.approx(1 / 3)
    assert res['tumor_recall'] == pytest.approx(1 / 3)
    for mode in ('reference', 'ocelot', 'hungarian'):
        res = evaluate([IMG_W, IMG_W], mode=mode)
        assert all(v == 0.0 for v in res.values()), res
        assert evaluate([], mode=mode)['mF1'] == 0.0
    # predictions only: precision 0, recall 0, never NaN
    res = evaluate([IMG_Y], mode='reference')
    assert res['tumor_precision'] == 0.0 and res['tumor_recall'] == 0.0


def test_min_gt_per_image_filter():
    img_v = sample(pred=[[10, 10], [200, 200]], gt=[[10, 10], [60, 60]])  # P = R = 1/2
    images = [IMG_X, IMG_Y, IMG_Z, IMG_W, img_v]
    res = evaluate(images, mode='reference', min_gt_per_image=2)
    # only Z (P = R = 0) and V (P = R = 1/2) have >= 2 GT points
    assert res['tumor_precision'] == pytest.approx(0.25)
    assert res['tumor_recall'] == pytest.approx(0.25)
    assert res['tumor_f1'] == pytest.approx(0.25)
    pooled = evaluate(images, mode='ocelot', min_gt_per_image=2)
    assert pooled['tumor_precision'] == pytest.approx(1 / 2)  # 1 TP / 2 predictions (V)
    assert pooled['tumor_recall'] == pytest.approx(1 / 4)  # 1 TP / 4 GT (Z + V)


def test_radius_in_microns():
    img = sample(pred=[[20, 0]], gt=[[0, 0]])
    assert evaluate([img], mode='ocelot', radius_um=5, mpp=0.25)['tumor_f1'] == 1.0  # 20 px
    assert evaluate([img], mode='ocelot', radius_um=5, mpp=0.5)['tumor_f1'] == 0.0  # 10 px
    # the image's own mpp wins over the metric's fallback
    img_mpp = sample(pred=[[20, 0]], gt=[[0, 0]], mpp=0.25)
    assert evaluate([img_mpp], mode='ocelot', radius_um=5, mpp=0.5)['tumor_f1'] == 1.0
    with pytest.raises(ValueError, match='mpp'):
        evaluate([sample(pred=[[1, 1]], gt=[[1, 1]], img_path='a.png')], radius_um=5)


def test_unannotated_recall():
    img = sample(pred=[[0, 0], [100, 0]], gt=[[0, 0], [100, 0], [200, 0], [300, 0]],
                 annotated=[True, False, False, True])
    res = evaluate([img], mode='ocelot')
    assert res['tumor_recall'] == pytest.approx(0.5)
    assert res['tumor_unannotated_recall'] == pytest.approx(0.5)  # GT1 found, GT2 missed
    assert res['unannotated_recall'] == pytest.approx(0.5)
    assert res['det_unannotated_recall'] == pytest.approx(0.5)
    # without the flags the keys are absent
    assert 'unannotated_recall' not in evaluate([IMG_A], mode='ocelot')
    # all GT annotated: no unannotated GT -> 0.0, not NaN
    img = sample(pred=[[0, 0]], gt=[[0, 0]], annotated=[True])
    assert evaluate([img], mode='reference')['unannotated_recall'] == 0.0


def test_multiclass_label_confusion():
    img = sample(pred=[[10, 10], [50, 51]], pred_labels=[1, 1], gt=[[10, 10], [50, 50]],
                 gt_labels=[0, 1])
    for mode in ('reference', 'ocelot', 'hungarian'):
        res = evaluate([img], classes=('tumor', 'other cell'), mode=mode)
        assert res['tumor_precision'] == 0.0 and res['tumor_recall'] == 0.0
        assert res['other_cell_precision'] == pytest.approx(0.5)
        assert res['other_cell_recall'] == 1.0
        assert res['other_cell_f1'] == pytest.approx(2 / 3)
        assert res['mF1'] == pytest.approx(1 / 3)
        assert res['det_f1'] == 1.0  # both cells found when classes are ignored
    res = evaluate([img], classes=('tumor', 'other cell'), class_agnostic=False)
    assert not any(k.startswith('det_') for k in res)


def test_gt_is_mapped_back_with_scale_factor():
    # the network saw the image at 2x; GT went through the resize, predictions were rescaled
    img = sample(pred=[[10, 10]], gt=[[20.5, 20.5]], scale_factor=(2.0, 2.0))
    assert evaluate([img], mode='ocelot', radius=1)['tumor_f1'] == 1.0
    assert evaluate([img], mode='ocelot', radius=1, rescale_gt=False)['tumor_f1'] == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match='mode'):
        PointF1Metric(mode='coco')
    with pytest.raises(ValueError, match='radius'):
        PointF1Metric(radius=-1)
    with pytest.raises(ValueError, match='min_gt_per_image'):
        PointF1Metric(min_gt_per_image=-2)
    with pytest.raises(ValueError, match=r'bad\.png.*labels'):
        evaluate([sample(pred=[[1, 1]], pred_labels=[3], gt=[], img_path='bad.png')])
    with pytest.raises(ValueError, match='gt_instances'):
        metric = PointF1Metric(classes=('a', ))
        metric.process({}, [dict(img_path='x.png', pred_instances=dict(points=torch.zeros(0, 2)))])
    with pytest.raises(ValueError, match='class names'):
        PointF1Metric().process({}, [IMG_A])


def test_registry_evaluator_prefix_and_data_samples():
    metric = METRICS.build(dict(type='PointF1Metric', mode='ocelot'))
    evaluator = Evaluator([metric])
    evaluator.dataset_meta = dict(classes=('tumor', ))
    samples = []
    for pred, gt in (([[12, 10], [50, 24], [200, 200]], [[10, 10], [50, 10], [90, 10]]),
                     ([[10, 10]], [[10, 10], [40, 40]])):
        ds = DetDataSample(metainfo=dict(img_path='x.png', ori_shape=(256, 256)))
        ds.pred_instances = InstanceData(points=torch.tensor(pred, dtype=torch.float32),
                                         labels=torch.zeros(len(pred), dtype=torch.long),
                                         scores=torch.ones(len(pred)))
        ds.gt_instances = InstanceData(points=torch.tensor(gt, dtype=torch.float32),
                                       labels=torch.zeros(len(gt), dtype=torch.long))
        samples.append(ds)
    evaluator.process(samples)
    # what is stored per image: a small numpy count table, no tensors
    assert all(isinstance(r['counts'], np.ndarray) and r['counts'].shape == (2, 5)
               for r in metric.results)
    res = evaluator.evaluate(len(samples))
    assert res['point/tumor_f1'] == pytest.approx(2 / 3)
    assert res['point/mF1'] == pytest.approx(2 / 3)
