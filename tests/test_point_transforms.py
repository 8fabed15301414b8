"""Point geometry (protocal.structures) and the point-aware pipeline transforms."""
import mmcv
import numpy as np
import pytest
import torch

import protocal  # noqa: F401  (registers the transforms)
from mmdet.registry import TRANSFORMS
from mmdet.structures import DetDataSample
from protocal.datasets.transforms import (PackPointDetInputs, PointRandomCrop, PointRandomFlip,
                                          PointRandomRotate90, PointResize)
from protocal.structures import (crop_points, flip_points, points_inside, rot90_points,
                                 scale_points, unscale_points)

H, W = 7, 10  # deliberately non-square


def one_hot(row, col, shape=(H, W)):
    img = np.zeros(shape, dtype=np.uint8)
    img[row, col] = 1
    return img


def pixel_of(points):
    """Pixel (row, col) under each point (pixel-centre convention)."""
    pix = np.floor(np.asarray(points, dtype=np.float64) + 0.5).astype(int)
    return pix[:, 1], pix[:, 0]


# ----------------------------------------------------------------------------------------------
# point_ops
@pytest.mark.parametrize('direction,axis', [('horizontal', 1), ('vertical', 0),
                                            ('diagonal', (0, 1))])
def test_flip_points_follow_the_pixel(direction, axis):
    for row, col in [(0, 0), (2, 7), (6, 9), (3, 4)]:
        flipped_img = np.flip(one_hot(row, col), axis)
        assert np.array_equal(flipped_img, mmcv.imflip(one_hot(row, col), direction))
        pts = flip_points(np.array([[col, row]], dtype=np.float32), (H, W), direction)
        r, c = pixel_of(pts)
        assert flipped_img[r[0], c[0]] == 1
        np.testing.assert_array_equal(
            flip_points(pts, (H, W), direction), np.array([[col, row]], dtype=np.float32))


@pytest.mark.parametrize('k', [-1, 0, 1, 2, 3, 4, 5])
def test_rot90_points_follow_the_pixel(k):
    for row, col in [(0, 0), (2, 7), (6, 9), (3, 4)]:
        rotated = np.rot90(one_hot(row, col), k)
        pts = rot90_points(np.array([[col, row]], dtype=np.float32), (H, W), k)
        r, c = pixel_of(pts)
        assert rotated[r[0], c[0]] == 1
        back = rot90_points(pts, rotated.shape, -k)
        np.testing.assert_array_equal(back, [[col, row]])


def test_point_ops_accept_tensors_and_keep_the_input_unchanged():
    pts = torch.tensor([[1.0, 2.0], [3.5, 0.25]])
    orig = pts.clone()
    out = rot90_points(flip_points(pts, (H, W), 'horizontal'), (H, W), 1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.equal(pts, orig)
    ints = flip_points(torch.tensor([[1, 2]]), (H, W), 'vertical')
    assert ints.dtype == torch.float32 and ints.tolist() == [[1.0, 4.0]]
    with pytest.raises(ValueError, match='direction'):
        flip_points(pts, (H, W), 'sideways')
    with pytest.raises(ValueError, match=r'\(N, 2\)'):
        flip_points(np.zeros((3, 3)), (H, W), 'vertical')


def test_scale_points_pixel_centre_convention_and_round_trip():
    pts = np.array([[3.0, 1.0], [0.0, 0.0], [-0.5, -0.5]], dtype=np.float32)
    scaled = scale_points(pts, (2.0, 3.0))
    np.testing.assert_allclose(scaled, [[6.5, 4.0], [0.5, 1.0], [-0.5, -0.5]])
    np.testing.assert_allclose(unscale_points(scaled, (2.0, 3.0)), pts, atol=1e-6)
    np.testing.assert_allclose(scale_points(pts, 0.5), (pts + 0.5) * 0.5 - 0.5)
    t = torch.tensor([[6.5, 4.0]], dtype=torch.float64)
    back = unscale_points(t, (2.0, 3.0))
    assert back.dtype == torch.float64 and back.tolist() == [[3.0, 1.0]]
    with pytest.raises(ValueError):
        scale_points(pts, (0.0, 1.0))
    # an upsampled pixel block is centred on the scaled point
    img = mmcv.imresize(one_hot(2, 3), (W * 2, H * 2), interpolation='nearest')
    rows, cols = np.nonzero(img)
    np.testing.assert_allclose(scale_points(np.array([[3.0, 2.0]]), 2.0),
                               [[cols.mean(), rows.mean()]])


def test_points_inside_and_crop_points():
    pts = np.array([[-0.5, 0.0], [-0.51, 0.0], [9.49, 6.49], [9.5, 0.0], [0.0, 6.5]])
    assert points_inside(pts, (H, W)).tolist() == [True, False, True, False, False]
    shifted, keep = crop_points(np.array([[2.0, 3.0], [5.0, 5.0], [1.4, 3.0], [1.6, 3.0]]),
                                (2, 1, 5, 4))
    np.testing.assert_allclose(shifted, [[0, 2], [3, 4], [-0.6, 2], [-0.4, 2]])
    assert keep.tolist() == [True, False, False, True]
    with pytest.raises(ValueError):
        crop_points(pts, (3, 0, 3, 5))


# ----------------------------------------------------------------------------------------------
# transforms
def marked_results(points, shape=(H, W), with_annotated=True):
    """An image whose pixel under point i holds i + 1, with labels i and annotated flags."""
    points = np.asarray(points, dtype=np.float32)
    img = np.zeros(shape + (3, ), dtype=np.uint8)
    rows, cols = pixel_of(points)
    for i, (r, c) in enumerate(zip(rows, cols)):
        if 0 <= r < shape[0] and 0 <= c < shape[1]:
            img[r, c] = i + 1
    results = dict(img=img, img_shape=shape, ori_shape=shape, img_path='x.png', gt_points=points,
                   gt_points_labels=np.arange(len(points), dtype=np.int64))
    if with_annotated:
        results['gt_points_annotated'] = np.arange(len(points)) % 2 == 0
    return results


def assert_points_on_marks(results):
    """Every remaining point still sits on its own marked pixel; arrays stay aligned."""
    pts, labels = results['gt_points'], results['gt_points_labels']
    assert pts.dtype == np.float32 and pts.shape == (len(labels), 2)
    assert results['img'].shape[:2] == tuple(results['img_shape'])
    rows, cols = pixel_of(pts)
    np.testing.assert_array_equal(results['img'][rows, cols, 0], labels + 1)
    if 'gt_points_annotated' in results:
        np.testing.assert_array_equal(results['gt_points_annotated'], labels % 2 == 0)


POINTS = [[0, 0], [9, 6], [4, 2], [7, 5], [2, 6]]


@pytest.mark.parametrize('direction', ['horizontal', 'vertical', 'diagonal'])
def test_random_flip_moves_points_with_pixels(direction):
    out = PointRandomFlip(prob=1.0, direction=direction)(marked_results(POINTS))
    assert out['flip'] is True and out['flip_direction'] == direction
    assert len(out['gt_points']) == len(POINTS)
    assert_points_on_marks(out)
    none = PointRandomFlip(prob=0.0)(marked_results(POINTS))
    assert none['flip'] is False and none['flip_direction'] is None
    np.testing.assert_array_equal(none['gt_points'], POINTS)


def test_random_flip_draws_all_directions_reproducibly():
    flip = PointRandomFlip(prob=0.5)
    np.random.seed(0)
    seen = [flip(marked_results(POINTS))['flip_direction'] for _ in range(40)]
    assert set(seen) == {None, 'horizontal', 'vertical', 'diagonal'}
    np.random.seed(0)
    assert seen == [flip(marked_results(POINTS))['flip_direction'] for _ in range(40)]


def test_random_rotate90_moves_points_with_pixels():
    rot = PointRandomRotate90(prob=0.75)
    np.random.seed(1)
    ks = set()
    for _ in range(30):
        out = rot(marked_results(POINTS))
        ks.add(out['rot90_k'])
        expected_shape = (W, H) if out['rot90_k'] % 2 else (H, W)
        assert out['img'].shape[:2] == expected_shape and out['img'].flags.c_contiguous
        assert_points_on_marks(out)
    assert ks == {0, 1, 2, 3}


def test_random_crop_keeps_points_inside_and_drops_the_rest():
    np.random.seed(2)
    crop = PointRandomCrop(crop_size=(4, 5))
    counts = set()
    for _ in range(20):
        results = marked_results(POINTS)
        out = crop(results)
        x0, y0, x1, y1 = out['crop_bbox']
        assert out['img'].shape[:2] == (4, 5) and out['img_shape'] == (4, 5)
        inside = [i for i, (x, y) in enumerate(POINTS) if x0 <= x < x1 and y0 <= y < y1]
        assert out['gt_points_labels'].tolist() == inside
        assert_points_on_marks(out)
        counts.add(len(inside))
    assert len(counts) > 1
    # a crop larger than the image keeps the whole image
    out = PointRandomCrop(crop_size=50)(marked_results(POINTS))
    assert out['img'].shape[:2] == (H, W) and len(out['gt_points']) == len(POINTS)


def test_resize_scales_points_with_the_image():
    out = PointResize(scale_factor=2.0, interpolation='nearest')(marked_results(POINTS))
    assert out['img_shape'] == (2 * H, 2 * W) and out['scale_factor'] == (2.0, 2.0)
    assert_points_on_marks(out)
    np.testing.assert_allclose(out['gt_points'], (np.array(POINTS) + 0.5) * 2 - 0.5)
    # downscale to a fixed size: actual factors are recorded, composed with earlier resizes
    out = PointResize(scale=(5, 14))(out)
    assert out['img'].shape[:2] == (14, 5) and out['img_shape'] == (14, 5)
    assert out['scale_factor'] == pytest.approx((0.5, 2.0))
    assert len(out['gt_points']) == len(POINTS)
    np.testing.assert_allclose(unscale_points(out['gt_points'], out['scale_factor']), POINTS,
                               atol=1e-5)
    kept = PointResize(scale=(20, 20), keep_ratio=True)(marked_results(POINTS))
    assert kept['img_shape'] == (14, 20) and kept['scale_factor'] == (2.0, 2.0)


def test_transforms_drop_points_outside_the_image():
    results = marked_results([[1, 1], [10.2, 3], [3, -4]])
    out = PointRandomFlip(prob=1.0, direction='vertical')(results)
    assert out['gt_points_labels'].tolist() == [0]
    assert out['gt_points_annotated'].tolist() == [True]


@pytest.mark.parametrize('transform', [
    PointRandomFlip(prob=1.0),
    PointRandomRotate90(prob=1.0),
    PointRandomCrop(crop_size=(3, 3)),
    PointResize(scale=(4, 4)),
])
def test_transforms_work_without_points(transform):
    results = dict(img=np.zeros((H, W, 3), dtype=np.uint8), img_shape=(H, W))
    out = transform(results)
    assert 'gt_points' not in out
    packed = PackPointDetInputs()(out)
    assert packed['data_samples'].gt_instances.points.shape == (0, 2)


def test_transforms_reject_misaligned_arrays():
    results = marked_results(POINTS)
    results['gt_points_labels'] = results['gt_points_labels'][:3]
    with pytest.raises(ValueError, match='gt_points_labels'):
        PointRandomFlip(prob=1.0)(results)
    with pytest.raises(KeyError, match='img'):
        PointRandomRotate90(prob=1.0)(dict(gt_points=np.zeros((0, 2))))
    with pytest.raises(ValueError):
        PointRandomFlip(direction='up')
    with pytest.raises(ValueError):
        PointResize(scale=(4, 4), scale_factor=2.0)


def test_pack_point_det_inputs():
    results = marked_results(POINTS, with_annotated=False)
    results.update(img_id='x', scale_factor=(1.0, 1.0), flip=False, mpp=0.25)
    packed = PackPointDetInputs()(results)
    inputs, sample = packed['inputs'], packed['data_samples']
    assert inputs.shape == (3, H, W) and inputs.dtype == torch.uint8
    assert torch.equal(inputs.permute(1, 2, 0), torch.from_numpy(results['img']))
    assert isinstance(sample, DetDataSample)
    gt = sample.gt_instances
    assert gt.points.dtype == torch.float32 and gt.points.tolist() == POINTS
    assert gt.labels.dtype == torch.int64 and gt.labels.tolist() == list(range(5))
    assert gt.annotated.dtype == torch.bool and gt.annotated.all()
    assert sample.img_shape == (H, W) and sample.mpp == 0.25 and sample.img_id == 'x'
    assert 'flip_direction' not in sample.metainfo  # missing meta keys are skipped

    results = marked_results(POINTS)
    gt = PackPointDetInputs()(results)['data_samples'].gt_instances
    assert gt.annotated.tolist() == [True, False, True, False, True]

    gray = PackPointDetInputs()(dict(img=np.zeros((4, 6), dtype=np.uint8)))
    assert gray['inputs'].shape == (1, 4, 6)
    gt = gray['data_samples'].gt_instances
    assert gt.labels.shape == (0, ) and gt.labels.dtype == torch.int64
    assert gt.annotated.shape == (0, ) and gt.annotated.dtype == torch.bool

    no_labels = marked_results(POINTS)
    del no_labels['gt_points_labels']
    with pytest.raises(KeyError, match='gt_points_labels'):
        PackPointDetInputs()(no_labels)


def test_registry_build_and_repr():
    pipeline = [
        dict(type='PointRandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PointRandomRotate90'),
        dict(type='PointRandomCrop', crop_size=(4, 4)),
        dict(type='PointResize', scale=(8, 8)),
        dict(type='PackPointDetInputs'),
    ]
    transforms = [TRANSFORMS.build(cfg) for cfg in pipeline]
    assert [type(t).__name__ for t in transforms] == [c['type'] for c in pipeline]
    assert repr(transforms[0]) == "PointRandomFlip(prob=0.5, direction=('horizontal',))"
    assert 'crop_size=(4, 4)' in repr(transforms[2])
    results = marked_results(POINTS)
    for t in transforms:
        results = t(results)
    assert results['inputs'].shape == (3, 8, 8)
