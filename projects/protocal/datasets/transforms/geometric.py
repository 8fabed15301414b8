"""Geometric transforms that move point annotations together with the image.

They read and write the pipeline keys of ``docs/architecture.md``: ``img`` (H x W x C),
``img_shape`` and the per-point arrays ``gt_points`` (float32 ``(N, 2)`` xy), ``gt_points_labels``
and ``gt_points_annotated``. The point arrays are optional (inference pipelines have none); when
present they are kept aligned, and points that end up outside the image are dropped from all three.
Only points are transformed: heatmap targets are rendered afterwards by the codec. Point geometry
follows the pixel-centre convention of :mod:`protocal.structures.point_ops`. Randomness comes from
``np.random`` (like the MMCV transforms), so seeding NumPy makes pipelines reproducible.
"""
from typing import Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet.registry import TRANSFORMS

from protocal.structures.point_ops import (FLIP_DIRECTIONS, crop_points, flip_points,
                                           points_inside, rot90_points, scale_points)

__all__ = ['PointRandomFlip', 'PointRandomRotate90', 'PointRandomCrop', 'PointResize']

POINT_ARRAY_KEYS = ('gt_points_labels', 'gt_points_annotated')


def _where(results: dict) -> str:
    return f" (img_path={results['img_path']!r})" if 'img_path' in results else ''


def get_image(results: dict, transform: str) -> np.ndarray:
    """``results['img']`` as an array with at least two dimensions, or a clear error."""
    img = results.get('img')
    if img is None:
        raise KeyError(f'{transform}: results has no "img"; load the image first{_where(results)}')
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise ValueError(f'{transform}: "img" must be an H x W (x C) array{_where(results)}')
    return img


def get_points(results: dict, transform: str) -> Optional[np.ndarray]:
    """Validated float32 ``(N, 2)`` copy of ``results['gt_points']``; ``None`` if absent."""
    points = results.get('gt_points')
    if points is None:
        return None
    points = np.asarray(points, dtype=np.float32)
    if points.size == 0:
        points = points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'{transform}: gt_points must have shape (N, 2), got {points.shape}'
                         f'{_where(results)}')
    for key in POINT_ARRAY_KEYS:
        if results.get(key) is not None and len(results[key]) != len(points):
            raise ValueError(f'{transform}: {key} has {len(results[key])} entries but there are '
                             f'{len(points)} gt_points{_where(results)}')
    return points


def set_points(results: dict, points: np.ndarray, img_shape: Tuple[int, int]) -> None:
    """Store moved ``points`` and drop, from every per-point array, those outside ``img_shape``."""
    keep = points_inside(points, img_shape)
    results['gt_points'] = np.ascontiguousarray(points[keep], dtype=np.float32)
    for key in POINT_ARRAY_KEYS:
        if results.get(key) is not None:
            results[key] = np.asarray(results[key])[keep]


@TRANSFORMS.register_module()
class PointRandomFlip(BaseTransform):
    """Flip the image and its points.

    Required keys: ``img``. Optional: ``gt_points``, ``gt_points_labels``, ``gt_points_annotated``.
    Modified keys: ``img``, ``gt_points`` (and the aligned arrays). Added keys: ``flip`` (bool),
    ``flip_direction`` (str or None).

    Args:
        prob: probability of flipping.
        direction: one direction or a sequence of them, among ``'horizontal'``, ``'vertical'`` and
            ``'diagonal'``; when flipping, one is drawn uniformly.
    """

    def __init__(self,
                 prob: float = 0.5,
                 direction: Union[str, Sequence[str]] = FLIP_DIRECTIONS) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'PointRandomFlip: prob must lie in [0, 1], got {prob}')
        directions = (direction, ) if isinstance(direction, str) else tuple(direction)
        if not directions or any(d not in FLIP_DIRECTIONS for d in directions):
            raise ValueError(f'PointRandomFlip: direction must be one or more of '
                             f'{FLIP_DIRECTIONS}, got {direction!r}')
        self.prob = prob
        self.direction = directions

    @cache_randomness
    def _choose_direction(self) -> Optional[str]:
        if np.random.rand() >= self.prob:
            return None
        return self.direction[np.random.randint(len(self.direction))]

    def transform(self, results: dict) -> dict:
        img = get_image(results, 'PointRandomFlip')
        points = get_points(results, 'PointRandomFlip')
        direction = self._choose_direction()
        results['flip'] = direction is not None
        results['flip_direction'] = direction
        if direction is not None:
            results['img'] = np.ascontiguousarray(mmcv.imflip(img, direction=direction))
            if points is not None:
                set_points(results, flip_points(points, img.shape[:2], direction), img.shape[:2])
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob}, direction={self.direction})'


@TRANSFORMS.register_module()
class PointRandomRotate90(BaseTransform):
    """Rotate the image and its points by a random multiple of 90 degrees (counter-clockwise, as
    ``np.rot90``).

    With probability ``prob`` a number of quarter turns ``k`` is drawn uniformly from {1, 2, 3}.
    Modified keys: ``img``, ``img_shape``, ``gt_points`` (and the aligned arrays). Added key:
    ``rot90_k`` (0 when not rotated).

    Args:
        prob: probability of rotating.
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'PointRandomRotate90: prob must lie in [0, 1], got {prob}')
        self.prob = prob

    @cache_randomness
    def _choose_k(self) -> int:
        if np.random.rand() >= self.prob:
            return 0
        return int(np.random.randint(1, 4))

    def transform(self, results: dict) -> dict:
        img = get_image(results, 'PointRandomRotate90')
        points = get_points(results, 'PointRandomRotate90')
        k = self._choose_k()
        results['rot90_k'] = k
        if k:
            rotated = np.ascontiguousarray(np.rot90(img, k))
            results['img'] = rotated
            results['img_shape'] = rotated.shape[:2]
            if points is not None:
                set_points(results, rot90_points(points, img.shape[:2], k), rotated.shape[:2])
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'


@TRANSFORMS.register_module()
class PointRandomCrop(BaseTransform):
    """Crop a random window of ``crop_size`` and keep the points inside it.

    A dimension of the image smaller than the crop is kept whole (no padding; the data
    preprocessor pads the batch). Modified keys: ``img``, ``img_shape``, ``gt_points`` (and the
    aligned arrays, points outside the window are dropped). Added key: ``crop_bbox``
    ``(x0, y0, x1, y1)``.

    Args:
        crop_size: ``(h, w)`` of the crop, or one int for a square.
    """

    def __init__(self, crop_size: Union[int, Tuple[int, int]]) -> None:
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        crop_size = tuple(crop_size)
        if len(crop_size) != 2 or any(not isinstance(s, int) or s < 1 for s in crop_size):
            raise ValueError(f'PointRandomCrop: crop_size must be (h, w) positive ints, '
                             f'got {crop_size!r}')
        self.crop_size = crop_size

    @cache_randomness
    def _choose_offset(self, h: int, w: int, crop_h: int, crop_w: int) -> Tuple[int, int]:
        y0 = int(np.random.randint(0, h - crop_h + 1))
        x0 = int(np.random.randint(0, w - crop_w + 1))
        return y0, x0

    def transform(self, results: dict) -> dict:
        img = get_image(results, 'PointRandomCrop')
        points = get_points(results, 'PointRandomCrop')
        h, w = img.shape[:2]
        crop_h, crop_w = min(self.crop_size[0], h), min(self.crop_size[1], w)
        y0, x0 = self._choose_offset(h, w, crop_h, crop_w)
        results['img'] = img[y0:y0 + crop_h, x0:x0 + crop_w]
        results['img_shape'] = (crop_h, crop_w)
        results['crop_bbox'] = (x0, y0, x0 + crop_w, y0 + crop_h)
        if points is not None:
            shifted, _ = crop_points(points, results['crop_bbox'])
            set_points(results, shifted, (crop_h, crop_w))
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(crop_size={self.crop_size})'


@TRANSFORMS.register_module()
class PointResize(BaseTransform):
    """Resize the image with ``mmcv.imresize`` and scale its points (pixel-centre convention).

    Exactly one of ``scale`` and ``scale_factor`` must be given. Modified keys: ``img``,
    ``img_shape``, ``gt_points`` (and the aligned arrays). Added keys: ``scale_factor``
    ``(w_scale, h_scale)`` -- the *actual* factors after rounding the output size, multiplied into
    an existing ``scale_factor`` so that it always maps ``ori_shape`` to ``img_shape`` -- and
    ``keep_ratio``.

    Args:
        scale: target ``(w, h)`` (or one int for a square). With ``keep_ratio`` the image is
            rescaled as large as possible inside ``scale`` (``mmcv.rescale_size``).
        scale_factor: a float or ``(w_scale, h_scale)``; the output size is rounded to pixels.
        keep_ratio: keep the aspect ratio when ``scale`` is given.
        interpolation: ``mmcv.imresize`` interpolation.
        backend: ``mmcv.imresize`` backend.
    """

    def __init__(self,
                 scale: Optional[Union[int, Tuple[int, int]]] = None,
                 scale_factor: Optional[Union[float, Tuple[float, float]]] = None,
                 keep_ratio: bool = False,
                 interpolation: str = 'bilinear',
                 backend: str = 'cv2') -> None:
        if (scale is None) == (scale_factor is None):
            raise ValueError('PointResize: give exactly one of scale and scale_factor')
        if scale is not None:
            scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
            if len(scale) != 2 or any(not isinstance(s, int) or s < 1 for s in scale):
                raise ValueError(f'PointResize: scale must be (w, h) positive ints, got {scale!r}')
        if scale_factor is not None:
            factors = ((scale_factor, scale_factor) if isinstance(scale_factor, (int, float)) else
                       tuple(scale_factor))
            if len(factors) != 2 or any(not f > 0 for f in factors):
                raise ValueError(f'PointResize: scale_factor must be positive, got '
                                 f'{scale_factor!r}')
            scale_factor = tuple(float(f) for f in factors)
        self.scale = scale
        self.scale_factor = scale_factor
        self.keep_ratio = keep_ratio
        self.interpolation = interpolation
        self.backend = backend

    def _target_size(self, w: int, h: int) -> Tuple[int, int]:
        if self.scale is not None:
            if self.keep_ratio:
                return mmcv.rescale_size((w, h), self.scale)
            return self.scale
        return (max(1, int(w * self.scale_factor[0] + 0.5)),
                max(1, int(h * self.scale_factor[1] + 0.5)))

    def transform(self, results: dict) -> dict:
        img = get_image(results, 'PointResize')
        points = get_points(results, 'PointResize')
        h, w = img.shape[:2]
        new_w, new_h = self._target_size(w, h)
        results['img'] = mmcv.imresize(
            img, (new_w, new_h), interpolation=self.interpolation, backend=self.backend)
        results['img_shape'] = (new_h, new_w)
        factor = (new_w / w, new_h / h)
        prev = results.get('scale_factor')
        results['scale_factor'] = (factor if prev is None else
                                   (prev[0] * factor[0], prev[1] * factor[1]))
        results['keep_ratio'] = self.keep_ratio
        if points is not None:
            set_points(results, scale_points(points, factor), (new_h, new_w))
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, scale_factor={self.scale_factor}, '
                f'keep_ratio={self.keep_ratio}, interpolation={self.interpolation!r}, '
                f'backend={self.backend!r})')
