"""PointHeatmapCodec: rendering checked by hand, decoding against skimage's peak_local_max."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max

from protocal.codecs import PointHeatmapCodec


def gauss(d2, sigma):
    return math.exp(-d2 / (2 * sigma**2))


def brute_force_heatmap(points, labels, shape, num_classes, radius, sigma):
    """Pixel-by-pixel rendering of spec 1.4, for comparison."""
    h, w = shape
    fg = np.zeros((num_classes, h, w))
    rows, cols = np.mgrid[:h, :w]
    for (x, y), c in zip(points, labels):
        cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
        d2 = (cols - cx)**2 + (rows - cy)**2
        fg[c] += np.where(d2 <= radius**2, np.exp(-d2 / (2 * sigma**2)), 0)
    fg = fg.clip(0, 1)
    return np.concatenate([(1 - fg.sum(0, keepdims=True)).clip(0, 1), fg])


def reference_peaks(prob, thr, m, eb):
    """The reference post-processing (spec 6): zero below the threshold, then peak_local_max."""
    zeroed = np.where(prob < thr, 0, prob)
    return peak_local_max(zeroed, min_distance=m, threshold_abs=0, exclude_border=eb)


def as_set(rows_cols):
    """(row, col) array -> sorted list of (x, y) tuples."""
    return sorted((int(c), int(r)) for r, c in np.asarray(rows_cols).reshape(-1, 2))


def decoded_set(dets, label):
    pts = dets['points'][dets['labels'] == label]
    return sorted((int(x), int(y)) for x, y in pts.round().long().tolist())


# ----------------------------------------------------------------------------------------------
# construction
def test_defaults_and_public_attributes():
    codec = PointHeatmapCodec(num_classes=2)
    assert codec.num_classes == 2 and codec.radius == 15 and codec.sigma == 7.5
    assert codec.min_distance == 6 and codec.exclude_border == 3
    assert codec.score_thr.tolist() == [0.5, 0.5] and codec.score_thr.dtype == torch.float32
    assert codec.cross_class_nms is False
    assert PointHeatmapCodec(2, min_distance=12).exclude_border == 6
    assert PointHeatmapCodec(2, min_distance=5, exclude_border=True).exclude_border == 5
    assert PointHeatmapCodec(2, min_distance=5, exclude_border=False).exclude_border == 0
    assert PointHeatmapCodec(2, exclude_border=1).exclude_border == 1
    per_class = PointHeatmapCodec(2, score_thr=(0.1, 0.7)).score_thr
    assert per_class.tolist() == pytest.approx([0.1, 0.7])
    assert 'min_distance=6' in repr(codec)


def test_built_from_registry():
    import protocal  # noqa: F401
    from mmdet.registry import TASK_UTILS
    codec = TASK_UTILS.build(dict(type='PointHeatmapCodec', num_classes=3, radius=5, sigma=2))
    assert isinstance(codec, PointHeatmapCodec) and codec.sigma == 2


@pytest.mark.parametrize('kwargs', [
    dict(num_classes=0),
    dict(num_classes=2, radius=0),
    dict(num_classes=2, sigma=-1),
    dict(num_classes=2, score_thr=(0.5, 0.5, 0.5)),
    dict(num_classes=2, score_thr=1.5),
    dict(num_classes=2, min_distance=0),
    dict(num_classes=2, min_distance=2.5),
    dict(num_classes=2, exclude_border=-1),
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        PointHeatmapCodec(**kwargs)


# ----------------------------------------------------------------------------------------------
# encoding
def test_encode_single_point_by_hand():
    codec = PointHeatmapCodec(num_classes=2, radius=3)  # sigma = 1.5
    heat = codec.encode(torch.tensor([[5.0, 4.0]]), torch.tensor([1]), (10, 12))
    assert heat.shape == (3, 10, 12) and heat.dtype == torch.float32
    c2 = heat[2]
    assert c2[4, 5] == 1.0
    assert c2[4, 7].item() == pytest.approx(gauss(4, 1.5))  # d = 2
    assert c2[4, 8].item() == pytest.approx(math.exp(-2))  # d = r is inside: e^-2 at the edge
    assert c2[6, 7].item() == pytest.approx(gauss(8, 1.5))  # d = 2.83
    assert c2[7, 7] == 0 and c2[4, 9] == 0  # d = 3.6 and d = 4
    assert (c2 > 0).sum() == 29  # integer points of a disc of radius 3
    assert not heat[1].any()
    torch.testing.assert_close(heat[0], 1 - c2)


def test_encode_same_class_overlap_is_summed_then_clipped():
    codec = PointHeatmapCodec(num_classes=1, radius=3)
    heat = codec.encode(np.array([[5, 5], [6, 5]], dtype=np.float32), np.array([0, 0]), (11, 11))
    assert heat[1, 5, 5] == 1.0 and heat[1, 5, 6] == 1.0  # 1 + e^(-1/4.5) clipped
    # column 3: d = 2 and d = 3 from the two points, sum below 1 -> not clipped
    expected = gauss(4, 1.5) + gauss(9, 1.5)
    assert heat[1, 5, 3].item() == pytest.approx(expected)
    assert heat[0, 5, 3].item() == pytest.approx(1 - expected)
    assert heat[0, 5, 5] == 0


def test_encode_two_classes_background_is_clipped_after_each_class():
    codec = PointHeatmapCodec(num_classes=2, radius=4)
    heat = codec.encode([[4.0, 4.0], [6.0, 4.0], [6.0, 4.0]], [0, 1, 1], (9, 11))
    # class 1 has two identical points -> 2 at its centre, clipped to 1 before the background
    assert heat[2, 4, 6] == 1.0
    assert heat[1, 4, 6].item() == pytest.approx(gauss(4, 2))
    assert heat[0, 4, 6] == 0
    y1 = gauss(1, 2)
    y2 = min(1.0, 2 * gauss(1, 2))
    assert heat[0, 4, 5].item() == pytest.approx(max(0.0, 1 - y1 - y2))


def test_encode_empty_points_gives_background():
    codec = PointHeatmapCodec(num_classes=2)
    for points, labels in [(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)),
                           (np.zeros((0, 2)), np.zeros(0, dtype=np.int64)), ([], [])]:
        heat = codec.encode(points, labels, (6, 7))
        assert heat.shape == (3, 6, 7)
        assert (heat[0] == 1).all() and not heat[1:].any()


def test_encode_points_outside_the_image():
    codec = PointHeatmapCodec(num_classes=1, radius=3)
    heat = codec.encode([[-2.0, 3.0], [100.0, 100.0], [1e30, -1e30]], [0, 0, 0], (8, 8))
    assert heat[1, 3, 0].item() == pytest.approx(gauss(4, 1.5))
    assert heat[1, 3, 1].item() == pytest.approx(math.exp(-2))
    assert heat[1, 3, 2] == 0 and heat[1, 0, 0] == 0


def test_encode_rounds_to_the_pixel_under_the_point():
    codec = PointHeatmapCodec(num_classes=1, radius=2)
    heat = codec.encode([[2.4, 3.6], [6.5, 1.49]], [0, 0], (8, 9))
    assert heat[1, 4, 2] == 1.0 and heat[1, 1, 7] == 1.0
    assert (heat[1] == 1).sum() == 2


def test_encode_matches_brute_force_and_batch():
    rng = np.random.default_rng(0)
    codec = PointHeatmapCodec(num_classes=3, radius=5, sigma=2.0)
    shape = (23, 31)
    sets = []
    for _ in range(3):
        n = int(rng.integers(0, 15))
        points = rng.uniform(-6, 36, (n, 2)).astype(np.float32)
        labels = rng.integers(0, 3, n)
        sets.append((points, labels))
        expected = brute_force_heatmap(points, labels, shape, 3, 5, 2.0)
        np.testing.assert_allclose(codec.encode(points, labels, shape).numpy(), expected,
                                   atol=1e-6)
    batch = codec.encode_batch([torch.from_numpy(p) for p, _ in sets],
                               [torch.from_numpy(l) for _, l in sets], shape)
    assert batch.shape == (3, 4) + shape
    for b, (p, l) in enumerate(sets):
        torch.testing.assert_close(batch[b], codec.encode(p, l, shape))


def test_annotated_mask_is_the_disc_support():
    codec = PointHeatmapCodec(num_classes=2, radius=15)
    mask = codec.annotated_mask(torch.tensor([[40.0, 40.0]]), (100, 100))
    assert mask.dtype == torch.bool and mask.sum() == 709  # "the disc covers about 709 px"
    heat = codec.encode([[40.0, 40.0], [5.0, 95.0]], [0, 1], (100, 100))
    both = codec.annotated_mask(np.array([[40.0, 40.0], [5.0, 95.0]]), (100, 100))
    assert torch.equal(both, heat[1:].sum(0) > 0)
    assert not codec.annotated_mask(torch.zeros(0, 2), (5, 5)).any()


@pytest.mark.parametrize('points,labels', [
    ([[1.0, 2.0]], [2]),  # label out of range
    ([[1.0, 2.0]], [-1]),
    ([[1.0, 2.0]], [0.0]),  # float labels
    ([[1.0, float('nan')]], [0]),
    ([[1.0, 2.0, 3.0]], [0]),  # not (N, 2)
    ([[1.0, 2.0]], [0, 1]),  # length mismatch
])
def test_encode_bad_input_raises(points, labels):
    with pytest.raises(ValueError):
        PointHeatmapCodec(num_classes=2).encode(points, labels, (8, 8))


# ----------------------------------------------------------------------------------------------
# decoding vs skimage.feature.peak_local_max
def random_probs(rng, k, h, w, smooth):
    logits = ndi.gaussian_filter(rng.standard_normal((k + 1, h, w)), (0, smooth, smooth))
    logits *= 8 / logits.std()
    return torch.softmax(torch.from_numpy(logits), 0).float().numpy()


@pytest.mark.parametrize('seed', range(24))
def test_decode_equals_peak_local_max_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 4))
    h, w = (int(v) for v in rng.integers(20, 90, 2))
    m = int(rng.integers(1, 9))
    eb = int(rng.integers(0, m + 1))
    thr = rng.uniform(0.05, 0.6, k).round(3)
    probs = random_probs(rng, k, h, w, smooth=float(rng.uniform(1, 3)))
    codec = PointHeatmapCodec(num_classes=k, score_thr=thr.tolist(), min_distance=m,
                              exclude_border=eb)
    dets = codec.decode(torch.from_numpy(probs))
    total = 0
    for c in range(k):
        found = decoded_set(dets, c)
        assert found == as_set(reference_peaks(probs[c + 1], thr[c], m, eb))
        # the same as thresholding inside peak_local_max (no value equals thr exactly here)
        assert found == as_set(
            peak_local_max(probs[c + 1], min_distance=m, threshold_abs=float(thr[c]),
                           exclude_border=eb))
        total += len(found)
    assert len(dets['points']) == total


@pytest.mark.parametrize('seed', range(12))
def test_decode_equals_peak_local_max_on_quantised_maps(seed):
    """Quantised maps are full of plateaus and ties between separate maxima."""
    rng = np.random.default_rng(100 + seed)
    k, m = 2, int(rng.integers(2, 8))
    h, w = (int(v) for v in rng.integers(8, 70, 2))
    levels = int(rng.integers(2, 6))
    probs = np.round(random_probs(rng, k, h, w, smooth=2.0) * levels) / levels
    probs = probs.astype(np.float64 if seed % 2 else np.float32)
    thr = float(rng.choice([0.0, 0.25, 0.5]))
    eb = int(rng.integers(0, 4))
    codec = PointHeatmapCodec(num_classes=k, score_thr=thr, min_distance=m, exclude_border=eb)
    dets = codec.decode(probs)
    for c in range(k):
        assert decoded_set(dets, c) == as_set(reference_peaks(probs[c + 1], thr, m, eb))


def one_class(fg):
    fg = np.asarray(fg, dtype=np.float32)
    return np.stack([1 - fg, fg])


@pytest.mark.parametrize('case', ['plateau', 'ties_close', 'ties_at_m', 'ring', 'constant',
                                  'zeros', 'border', 'tiny', 'ragged'])
def test_decode_constructed_cases_equal_peak_local_max(case):
    m, eb = 4, 2
    fg = np.zeros((20, 23), dtype=np.float32)
    if case == 'plateau':
        fg[5:8, 6:11] = 0.9  # one 3 x 5 plateau -> peaks spaced m apart in raster order
        fg[14:17, 14:17] = 0.8
    elif case == 'ties_close':
        fg[6, 6] = fg[6, 9] = fg[8, 7] = 0.7  # equal isolated maxima closer than m
    elif case == 'ties_at_m':
        fg[6, 6] = fg[6, 10] = fg[10, 10] = 0.7  # exactly m apart: all kept
    elif case == 'ring':
        rows, cols = np.mgrid[:20, :23]
        fg[:] = np.where(np.abs(np.hypot(rows - 10, cols - 11) - 5) < 0.7, 0.6, 0.1)
    elif case == 'constant':
        fg[:] = 0.7  # every pixel is its window maximum: skimage reports nothing
    elif case == 'border':
        fg[1, 10] = fg[2, 3] = fg[17, 20] = fg[18, 5] = fg[10, 21] = 0.9
    elif case == 'tiny':
        fg = np.array([[0.2, 0.9, 0.3]], dtype=np.float32)
        eb = 0
    elif case == 'ragged':
        fg = np.zeros((17, 19), dtype=np.float32)  # 17, 19 are not multiples of m + 1
        fg[16, 18] = fg[15, 3] = fg[0, 17] = 0.9
        fg[16, 10:13] = 0.8
        eb = 0
    probs = one_class(fg)
    codec = PointHeatmapCodec(num_classes=1, score_thr=0.5, min_distance=m, exclude_border=eb)
    found = decoded_set(codec.decode(probs), 0)
    assert found == as_set(reference_peaks(fg, 0.5, m, eb))
    if case == 'plateau':
        assert found == [(6, 5), (10, 5), (14, 14)]
    if case == 'ties_close':
        assert found == [(6, 6)]  # the first in raster order wins, the others are within m
    if case == 'ties_at_m':
        assert len(found) == 3
    if case == 'constant':
        assert found == []
    if case == 'border':
        assert found == [(3, 2), (20, 17)]


def test_decode_threshold_is_inclusive_and_per_class():
    fg1 = np.zeros((15, 15), dtype=np.float32)
    fg2 = np.zeros((15, 15), dtype=np.float32)
    fg1[7, 7] = 0.6
    fg2[4, 4] = 0.6
    fg2[10, 10] = 0.7
    probs = np.stack([1 - fg1 - fg2, fg1, fg2])
    dets = PointHeatmapCodec(2, score_thr=(0.6, 0.7), min_distance=3).decode(probs)
    assert dets['labels'].tolist() == [0, 1]
    assert dets['points'].tolist() == [[7.0, 7.0], [10.0, 10.0]]
    assert dets['scores'].tolist() == pytest.approx([0.6, 0.7])


def test_decode_output_types_order_and_batch():
    codec = PointHeatmapCodec(num_classes=2, radius=4, min_distance=3, score_thr=0.5)
    points = torch.tensor([[10.0, 10.0], [30.0, 12.0], [20.0, 25.0]])
    labels = torch.tensor([1, 0, 1])
    heat = codec.encode(points, labels, (40, 48))
    heat[2, 21:30, 16:25] *= 0.8  # lower score for the second class-1 point (its whole disc)
    dets = codec.decode(heat)
    assert dets['points'].dtype == torch.float32 and dets['points'].shape == (3, 2)
    assert dets['labels'].dtype == torch.int64 and dets['scores'].dtype == torch.float32
    assert dets['labels'].tolist() == [0, 1, 1]
    assert dets['points'].tolist() == [[30, 12], [10, 10], [20, 25]]  # by class, score first
    assert dets['scores'].tolist() == pytest.approx([1.0, 1.0, 0.8])
    batch = codec.decode_batch(torch.stack([heat, torch.zeros_like(heat)]))
    assert len(batch) == 2 and torch.equal(batch[0]['points'], dets['points'])
    assert batch[1]['points'].shape == (0, 2) and batch[1]['labels'].shape == (0, )


def test_decode_bad_input_raises():
    codec = PointHeatmapCodec(num_classes=2)
    with pytest.raises(ValueError, match='shape'):
        codec.decode(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match='shape'):
        codec.decode_batch(torch.rand(3, 8, 8))
    probs = torch.rand(3, 16, 16)
    probs[1, 3, 3] = float('nan')
    with pytest.raises(ValueError, match='NaN'):
        codec.decode(probs)
    with pytest.raises(ValueError, match='floating'):
        codec.decode(torch.ones(3, 8, 8, dtype=torch.long))


def test_encode_decode_round_trip():
    rng = np.random.default_rng(3)
    codec = PointHeatmapCodec(num_classes=2, radius=6, min_distance=4, score_thr=0.5)
    # cells on a jittered grid, 16 px apart (> 2 radius), away from the border
    grid = np.stack(np.meshgrid(np.arange(12, 120, 16), np.arange(12, 90, 16)), -1).reshape(-1, 2)
    points = (grid + rng.integers(-2, 3, grid.shape)).astype(np.float32)
    labels = rng.integers(0, 2, len(points))
    dets = codec.decode(codec.encode(points, labels, (100, 128)))
    got = sorted(zip(dets['points'].long().tolist(), dets['labels'].tolist()))
    want = sorted(zip(points.astype(int).tolist(), labels.tolist()))
    assert [(tuple(p), l) for p, l in got] == [(tuple(p), l) for p, l in want]
    assert torch.all(dets['scores'] == 1)


# ----------------------------------------------------------------------------------------------
# cross-class suppression and duplicate merging
def test_cross_class_nms_keeps_the_higher_score_within_euclidean_min_distance():
    fg1 = np.zeros((30, 30), dtype=np.float32)
    fg2 = np.zeros((30, 30), dtype=np.float32)
    fg1[10, 10], fg2[10, 16] = 0.9, 0.8  # 6 px apart: suppressed (<= m)
    fg1[20, 5], fg2[25, 10] = 0.7, 0.95  # Chebyshev 5 but Euclidean 7.1 > 6: both kept
    probs = np.stack([1 - fg1 - fg2, fg1, fg2])
    plain = PointHeatmapCodec(2, min_distance=6, score_thr=0.5, exclude_border=0).decode(probs)
    assert len(plain['points']) == 4
    nms = PointHeatmapCodec(2, min_distance=6, score_thr=0.5, exclude_border=0,
                            cross_class_nms=True).decode(probs)
    got = sorted(zip(nms['points'].long().tolist(), nms['labels'].tolist()))
    assert got == [([5, 20], 0), ([10, 10], 0), ([10, 25], 1)]


def test_suppress_duplicates_greedy_same_label():
    codec = PointHeatmapCodec(num_classes=2, min_distance=6)
    points = torch.tensor([[10.0, 10.0], [14.0, 13.0], [19.0, 16.0], [16.0, 10.0], [12.0, 11.0]])
    labels = torch.tensor([0, 0, 0, 0, 1])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    keep = codec.suppress_duplicates(points, labels, scores)
    # 1 is within 4 (< 6) of 0 -> dropped; 2 is 6 from 1 but 1 is gone and 9 from 0 -> kept;
    # 3 is exactly 6 from 0 (kept, strict <) ; 4 has another label -> kept
    assert keep.dtype == torch.int64 and keep.tolist() == [0, 2, 3, 4]
    cross = PointHeatmapCodec(num_classes=2, min_distance=6, cross_class_nms=True)
    assert cross.suppress_duplicates(points, labels, scores).tolist() == [0, 2]
    assert codec.suppress_duplicates(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long),
                                     torch.zeros(0)).tolist() == []
    with pytest.raises(ValueError):
        codec.suppress_duplicates(points, labels, scores[:3])


def test_suppress_duplicates_ties_keep_input_order():
    codec = PointHeatmapCodec(num_classes=1, min_distance=3)
    keep = codec.suppress_duplicates([[5.0, 5.0], [6.0, 5.0], [1.0, 1.0]], [0, 0, 0],
                                     [0.5, 0.5, 0.5])
    assert keep.tolist() == [0, 2]


def test_suppress_duplicates_handles_100k_points():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 20000, (100_000, 2)).astype(np.float32)
    points[50_000:] = points[:50_000] + rng.uniform(-2, 2, (50_000, 2))  # tile-overlap duplicates
    labels = rng.integers(0, 2, 100_000)
    labels[50_000:] = labels[:50_000]
    scores = rng.random(100_000).astype(np.float32)
    codec = PointHeatmapCodec(num_classes=2, min_distance=6)
    keep = codec.suppress_duplicates(points, labels, scores).numpy()
    assert 45_000 < len(keep) <= 50_000 + 5_000
    for c in range(2):
        kept = points[keep][labels[keep] == c].astype(np.float64)
        assert len(cKDTree(kept).query_pairs(r=5.999, p=np.inf)) == 0
