"""Reproducible simulation of sparse point annotation (spec section 1.5, trap T5)."""
import math
import os.path as osp
import zlib
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform

from mmdet.registry import TRANSFORMS

__all__ = ['SparsePointSampling', 'sample_sparse_subset', 'sparse_rng']

MODES = ('bernoulli', 'fixed_count', 'exp_threshold')


def sparse_rng(seed: int, img_path: Optional[str]) -> np.random.Generator:
    """The generator of one image: seeded by ``crc32(f'{seed}:{basename(img_path)}')``.

    It depends only on the seed and the file name, so the subset is the same in every epoch,
    dataloader worker, process and machine, and does not depend on the dataset order.
    """
    name = osp.basename(str(img_path)) if img_path is not None else ''
    return np.random.default_rng(zlib.crc32(f'{seed}:{name}'.encode('utf-8')))


def sample_sparse_subset(labels: np.ndarray,
                         ratio: float,
                         rng: np.random.Generator,
                         mode: str = 'bernoulli',
                         keep_first_per_class: bool = True) -> np.ndarray:
    """Choose the annotated subset of the points of one image.

    Points are visited in file order. With ``keep_first_per_class`` the first point of every class
    present is always annotated (so each class keeps at least one label per image, as in the
    reference). The other points are chosen by ``mode``:

    * ``'bernoulli'``: each is kept independently with probability ``ratio`` (the spec's
      re-implementation);
    * ``'fixed_count'``: exactly ``round(ratio * N)`` points in total (half rounded up), the kept
      first points included and chosen uniformly without replacement among the rest; when more
      classes are present than that count, all first points are still kept;
    * ``'exp_threshold'``: the reference rule (parity): ``-ln(1 - U) <= ratio`` with
      ``U ~ Uniform(0, 1)``, i.e. ``ratio`` is the threshold ``t`` and the keep probability is
      ``1 - exp(-t)`` (t = 0.1 keeps 9.5 %, not 10 %).

    ``ratio == 1`` annotates every point in all modes.

    Args:
        labels: int ``(N,)`` class index of each point in file order.
        ratio: fraction in ``(0, 1]`` (or the threshold ``t`` in ``'exp_threshold'`` mode).
        rng: the generator (see :func:`sparse_rng`).
        mode: one of ``'bernoulli'``, ``'fixed_count'``, ``'exp_threshold'``.
        keep_first_per_class: always keep the first point of every class.

    Returns:
        bool ``(N,)`` annotated flags.
    """
    labels = np.asarray(labels).reshape(-1)
    n = labels.shape[0]
    if ratio >= 1.0:
        return np.ones(n, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    if keep_first_per_class and n:
        _, first = np.unique(labels, return_index=True)
        keep[first] = True
    if mode == 'fixed_count':
        target = int(math.floor(ratio * n + 0.5))
        rest = np.flatnonzero(~keep)
        extra = max(target - int(keep.sum()), 0)
        if extra:
            keep[rng.permutation(rest)[:extra]] = True
        return keep
    # one uniform draw per point, in file order, so a point's draw does not depend on the others
    u = rng.random(n)
    if mode == 'bernoulli':
        keep |= u < ratio
    elif mode == 'exp_threshold':
        keep |= -np.log1p(-u) <= ratio
    else:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    return keep


@TRANSFORMS.register_module()
class SparsePointSampling(BaseTransform):
    """Mark a reproducible sparse subset of the ground-truth points as annotated.

    Sets ``results['gt_points_annotated']``; points are **never removed** (evaluation and the
    "recall on all cells" statistics need all of them; training losses only use annotated points).
    The random generator of an image is seeded with ``crc32(f'{seed}:{basename(img_path)}')``, so
    the subset is identical across epochs, workers, processes and machines, for every method that
    uses the same ``seed`` and ``ratio``.

    Put it **first after loading**, before any geometric transform: flips keep the point order but
    crops drop points, which would change the subset. To share one subset with other code bases,
    freeze it to files with ``tools/dataset_converters/freeze_sparse_subset.py``; datasets read the
    ``annotated`` column back and mark those samples ``sparse_frozen``, which this transform then
    leaves untouched (``respect_existing=True``).

    Args:
        ratio: fraction of points to annotate, ``0 < ratio <= 1`` (``1``: all). In
            ``'exp_threshold'`` mode it is the reference's threshold ``t``.
        seed: sampling seed (independent of the training seed on purpose).
        mode: ``'bernoulli'`` (default, spec re-implementation), ``'fixed_count'`` (exactly
            ``round(ratio * N)`` per image) or ``'exp_threshold'`` (reference parity).
        keep_first_per_class: always annotate the first point (file order) of each class present.
        respect_existing: keep the flags of samples whose subset is frozen in the annotation file
            (``results['sparse_frozen']``); with ``False`` they are re-sampled.
    """

    def __init__(self,
                 ratio: float,
                 seed: int = 0,
                 mode: str = 'bernoulli',
                 keep_first_per_class: bool = True,
                 respect_existing: bool = True) -> None:
        if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f'ratio must be in (0, 1], got {ratio!r}')
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.mode = mode
        self.keep_first_per_class = keep_first_per_class
        self.respect_existing = respect_existing

    def transform(self, results: dict) -> dict:
        """Set ``gt_points_annotated`` for the points in ``results``."""
        if 'gt_points_labels' not in results:
            raise KeyError('SparsePointSampling needs results["gt_points_labels"] (from a point '
                           'dataset); put it after the dataset, before geometric transforms')
        labels = np.asarray(results['gt_points_labels'])
        if self.respect_existing and results.get('sparse_frozen', False):
            if results.get('gt_points_annotated') is None:
                results['gt_points_annotated'] = np.ones(labels.shape[0], dtype=bool)
            return results
        rng = sparse_rng(self.seed, results.get('img_path'))
        results['gt_points_annotated'] = sample_sparse_subset(
            labels, self.ratio, rng, self.mode, self.keep_first_per_class)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(ratio={self.ratio}, seed={self.seed}, '
                f'mode={self.mode!r}, keep_first_per_class={self.keep_first_per_class}, '
                f'respect_existing={self.respect_existing})')
