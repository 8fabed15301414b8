"""SparsePointSampling: reproducibility, ratio semantics, frozen subsets (spec 1.5, trap T5)."""
import math

import numpy as np
import pytest

import protocal  # noqa: F401
from mmdet.registry import TRANSFORMS
from protocal.datasets.transforms import SparsePointSampling
from protocal.datasets.transforms.sparse_sampling import sample_sparse_subset, sparse_rng


def make_results(n=200, num_classes=2, img_path='/data/img/train/17.png', seed=1):
    rng = np.random.default_rng(seed)
    return dict(
        img_path=img_path,
        gt_points=rng.uniform(0, 1024, (n, 2)).astype(np.float32),
        gt_points_labels=rng.integers(0, num_classes, n).astype(np.int64),
        gt_points_annotated=np.ones(n, bool),
        sparse_frozen=False)


def flags(transform, results):
    return transform(dict(results))['gt_points_annotated']


def test_registered_and_validates_args():
    t = TRANSFORMS.build(dict(type='SparsePointSampling', ratio=0.3, seed=5, mode='fixed_count'))
    assert isinstance(t, SparsePointSampling) and t.ratio == 0.3 and t.seed == 5
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match='ratio'):
            SparsePointSampling(ratio=bad)
    with pytest.raises(ValueError, match='mode'):
        SparsePointSampling(ratio=0.5, mode='uniform')
    with pytest.raises(KeyError, match='gt_points_labels'):
        SparsePointSampling(ratio=0.5)(dict(img_path='a.png'))


def test_reproducible_across_calls_instances_and_folders():
    res = make_results()
    a = flags(SparsePointSampling(0.2, seed=3), res)
    assert a.dtype == np.bool_ and a.shape == (200, )
    np.testing.assert_array_equal(a, flags(SparsePointSampling(0.2, seed=3), res))
    np.testing.assert_array_equal(a, flags(SparsePointSampling(0.2, seed=3), res))
    # only the file name counts, not the folder
    moved = dict(res, img_path='/elsewhere/17.png')
    np.testing.assert_array_equal(a, flags(SparsePointSampling(0.2, seed=3), moved))
    # another seed or another image gives another subset
    assert not np.array_equal(a, flags(SparsePointSampling(0.2, seed=4), res))
    other = dict(res, img_path='/data/img/train/18.png')
    assert not np.array_equal(a, flags(SparsePointSampling(0.2, seed=3), other))


@pytest.mark.parametrize('mode,expected', [
    ('bernoulli', [0, 1, 3, 4, 5, 8, 11, 12, 13, 18]),
    ('fixed_count', [0, 1, 2, 11, 18, 19]),
    ('exp_threshold', [0, 1, 3, 4, 5, 8, 11, 13, 18]),
])
def test_subset_is_pinned_across_processes_and_machines(mode, expected):
    """The subset depends only on (seed, file name, labels): pinned values, not per-process state.

    (crc32 seeding is independent of PYTHONHASHSEED, and numpy's PCG64 stream is fixed.)
    """
    labels = np.array([0, 1] * 10)
    f = sample_sparse_subset(labels, 0.3, sparse_rng(11, 'x/17.png'), mode)
    assert np.flatnonzero(f).tolist() == expected


def test_rng_seed_is_crc32_of_seed_and_basename():
    import zlib
    a = sparse_rng(0, '/x/y/img_3.png').random(4)
    b = np.random.default_rng(zlib.crc32(b'0:img_3.png')).random(4)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('n,ratio', [(200, 0.1), (200, 0.33), (57, 0.5), (10, 0.25), (3, 0.5)])
def test_fixed_count_is_exact_and_keeps_first_of_each_class(n, ratio):
    res = make_results(n=n, num_classes=3)
    labels = res['gt_points_labels']
    f = flags(SparsePointSampling(ratio, mode='fixed_count'), res)
    n_present = len(np.unique(labels))
    assert f.sum() == max(math.floor(ratio * n + 0.5), n_present)
    for c in np.unique(labels):
        assert f[np.flatnonzero(labels == c)[0]]


def test_fixed_count_without_keep_first():
    labels = np.array([0] * 10 + [1])
    f = sample_sparse_subset(labels, 0.2, sparse_rng(0, 'a.png'), 'fixed_count', False)
    assert f.sum() == 2


def test_more_classes_than_budget_keeps_every_first_point():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 0, 0, 0])
    f = sample_sparse_subset(labels, 0.1, sparse_rng(0, 'a.png'), 'fixed_count')
    np.testing.assert_array_equal(np.flatnonzero(f), [0, 1, 2])


def test_bernoulli_keep_rate_is_ratio():
    labels = np.zeros(40000, np.int64)
    for p in (0.1, 0.3, 0.7):
        f = sample_sparse_subset(labels, p, sparse_rng(0, 'big.png'), 'bernoulli', False)
        assert abs(f.mean() - p) < 0.01


def test_exp_threshold_matches_reference_rate():
    labels = np.zeros(40000, np.int64)
    for t in (0.1, 0.5):
        f = sample_sparse_subset(labels, t, sparse_rng(0, 'big.png'), 'exp_threshold', False)
        assert abs(f.mean() - (1 - math.exp(-t))) < 0.01  # 9.5 % / 39.3 %, not t


def test_keep_first_per_class_in_bernoulli_mode():
    labels = np.array([1, 1, 0, 1, 0, 2])
    for seed in range(5):
        f = sample_sparse_subset(labels, 1e-6, sparse_rng(seed, 'a.png'), 'bernoulli')
        np.testing.assert_array_equal(np.flatnonzero(f), [0, 2, 5])


@pytest.mark.parametrize('mode', ['bernoulli', 'fixed_count', 'exp_threshold'])
def test_ratio_one_annotates_all_and_points_are_never_removed(mode):
    res = make_results(n=50)
    out = SparsePointSampling(1.0, mode=mode)(dict(res))
    assert out['gt_points_annotated'].all()
    out = SparsePointSampling(0.1, mode=mode)(dict(res))
    np.testing.assert_array_equal(out['gt_points'], res['gt_points'])
    np.testing.assert_array_equal(out['gt_points_labels'], res['gt_points_labels'])
    assert out['gt_points_annotated'].shape == (50, ) and 0 < out['gt_points_annotated'].sum() < 50


def test_empty_image():
    res = make_results(n=0)
    for mode in ('bernoulli', 'fixed_count', 'exp_threshold'):
        assert flags(SparsePointSampling(0.5, mode=mode), res).shape == (0, )


def test_respects_frozen_flags():
    res = make_results(n=20)
    frozen = np.zeros(20, bool)
    frozen[[3, 7]] = True
    res.update(gt_points_annotated=frozen, sparse_frozen=True)
    out = SparsePointSampling(0.5)(dict(res))
    np.testing.assert_array_equal(out['gt_points_annotated'], frozen)
    resampled = SparsePointSampling(0.5, respect_existing=False)(dict(res))['gt_points_annotated']
    assert not np.array_equal(resampled, frozen)
    # not frozen: flags from the file are replaced by the sampled subset
    res['sparse_frozen'] = False
    np.testing.assert_array_equal(
        SparsePointSampling(0.5)(dict(res))['gt_points_annotated'], resampled)


def test_subset_does_not_depend_on_other_points_draws_in_bernoulli_mode():
    """Draws are per point in file order: appending points keeps earlier decisions."""
    labels = np.zeros(100, np.int64)
    a = sample_sparse_subset(labels[:60], 0.3, sparse_rng(0, 'a.png'), 'bernoulli')
    b = sample_sparse_subset(labels, 0.3, sparse_rng(0, 'a.png'), 'bernoulli')
    np.testing.assert_array_equal(a, b[:60])
