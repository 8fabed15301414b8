"""Geometry of point annotations under image transforms.

Every function takes ``(N, 2)`` arrays of ``(x, y)`` pixel coordinates (``x`` = column, ``y`` = row)
as a NumPy array or a torch tensor and returns the same type (floating point, same device).

Pixel-centre convention
-----------------------
Pixel ``(col, row)`` has its centre at the integer coordinate ``(col, row)`` and covers
``[col - 0.5, col + 0.5) x [row - 0.5, row + 0.5)``. An image of width ``W`` therefore spans
``x`` in ``[-0.5, W - 0.5)``; a point lies on pixel ``(floor(x + 0.5), floor(y + 0.5))`` (this
is the pixel :class:`protocal.codecs.PointHeatmapCodec` renders it on). With this convention

* flipping maps column ``c`` to ``W - 1 - c``, exactly like ``mmcv.imflip`` moves the pixels, so
  flipping twice is the identity;
* ``rot90_points(..., k)`` follows ``np.rot90(img, k)`` (counter-clockwise);
* resizing by ``s`` maps ``x`` to ``(x + 0.5) * s - 0.5``, the half-pixel mapping used by
  ``cv2.resize`` / ``mmcv.imresize`` (note that MMDetection's boxes use ``x * s`` instead,
  because box corners sit on pixel edges, not centres).
"""
from typing import Sequence, Tuple, Union

import numpy as np
from torch import Tensor

__all__ = [
    'FLIP_DIRECTIONS', 'PointArray', 'flip_points', 'rot90_points', 'scale_points',
    'unscale_points', 'crop_points', 'points_inside'
]

PointArray = Union[np.ndarray, Tensor]

FLIP_DIRECTIONS = ('horizontal', 'vertical', 'diagonal')


def _as_float_points(points: PointArray, name: str = 'points') -> PointArray:
    """Validate an ``(N, 2)`` array and return a floating point copy of the same type."""
    if isinstance(points, Tensor):
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f'{name} must have shape (N, 2), got {tuple(points.shape)}')
        return points.clone() if points.is_floating_point() else points.float()
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'{name} must have shape (N, 2), got {points.shape}')
    if np.issubdtype(points.dtype, np.floating):
        return points.copy()
    return points.astype(np.float32)


def _hw(img_shape: Sequence[int]) -> Tuple[int, int]:
    if len(img_shape) < 2:
        raise ValueError(f'img_shape must be (h, w[, c]), got {img_shape}')
    return int(img_shape[0]), int(img_shape[1])


def flip_points(points: PointArray, img_shape: Sequence[int], direction: str) -> PointArray:
    """Flip points with the image, matching ``mmcv.imflip(img, direction)``.

    Args:
        points: ``(N, 2)`` xy coordinates.
        img_shape: ``(h, w)`` of the image *before* (and after) the flip.
        direction: ``'horizontal'`` (``x' = w - 1 - x``), ``'vertical'`` (``y' = h - 1 - y``) or
            ``'diagonal'`` (both).

    Returns:
        Flipped copy of ``points``.
    """
    if direction not in FLIP_DIRECTIONS:
        raise ValueError(f'flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}')
    h, w = _hw(img_shape)
    out = _as_float_points(points)
    if direction in ('horizontal', 'diagonal'):
        out[:, 0] = (w - 1) - out[:, 0]
    if direction in ('vertical', 'diagonal'):
        out[:, 1] = (h - 1) - out[:, 1]
    return out


def rot90_points(points: PointArray, img_shape: Sequence[int], k: int) -> PointArray:
    """Rotate points with the image, matching ``np.rot90(img, k)`` (counter-clockwise).

    Args:
        points: ``(N, 2)`` xy coordinates.
        img_shape: ``(h, w)`` of the image *before* the rotation.
        k: number of quarter turns; any integer (taken modulo 4).

    Returns:
        Rotated copy of ``points``, in the frame of the rotated image (shape ``(w, h)`` for odd k).
    """
    h, w = _hw(img_shape)
    k = int(k) % 4
    out = _as_float_points(points)
    if k == 0:
        return out
    x = out[:, 0].clone() if isinstance(out, Tensor) else out[:, 0].copy()
    y = out[:, 1].clone() if isinstance(out, Tensor) else out[:, 1].copy()
    if k == 1:  # pixel (r, c) -> (w - 1 - c, r)
        out[:, 0], out[:, 1] = y, (w - 1) - x
    elif k == 2:  # pixel (r, c) -> (h - 1 - r, w - 1 - c)
        out[:, 0], out[:, 1] = (w - 1) - x, (h - 1) - y
    else:  # pixel (r, c) -> (c, h - 1 - r)
        out[:, 0], out[:, 1] = (h - 1) - y, x
    return out


def _scale_pair(scale_factor: Union[float, Sequence[float]]) -> Tuple[float, float]:
    if isinstance(scale_factor, (int, float)):
        sw = sh = float(scale_factor)
    else:
        if len(scale_factor) != 2:
            raise ValueError(f'scale_factor must be a float or (w_scale, h_scale), '
                             f'got {scale_factor}')
        sw, sh = float(scale_factor[0]), float(scale_factor[1])
    if not (np.isfinite(sw) and np.isfinite(sh) and sw > 0 and sh > 0):
        raise ValueError(f'scale_factor must be positive and finite, got {scale_factor}')
    return sw, sh


def scale_points(points: PointArray, scale_factor: Union[float, Sequence[float]]) -> PointArray:
    """Map points into an image resized by ``scale_factor = (w_scale, h_scale)``.

    Pixel-centre convention: ``x' = (x + 0.5) * w_scale - 0.5`` (and likewise for ``y``), so the
    image extent ``[-0.5, W - 0.5)`` maps onto ``[-0.5, W * w_scale - 0.5)``.
    """
    sw, sh = _scale_pair(scale_factor)
    out = _as_float_points(points)
    out[:, 0] = (out[:, 0] + 0.5) * sw - 0.5
    out[:, 1] = (out[:, 1] + 0.5) * sh - 0.5
    return out


def unscale_points(points: PointArray, scale_factor: Union[float, Sequence[float]]) -> PointArray:
    """Inverse of :func:`scale_points`: ``x = (x' + 0.5) / w_scale - 0.5``.

    Used by heads to map predictions from the network input back to ``ori_shape``; works on torch
    tensors on any device.
    """
    sw, sh = _scale_pair(scale_factor)
    out = _as_float_points(points)
    out[:, 0] = (out[:, 0] + 0.5) / sw - 0.5
    out[:, 1] = (out[:, 1] + 0.5) / sh - 0.5
    return out


def points_inside(points: PointArray, img_shape: Sequence[int]) -> PointArray:
    """Bool mask of the points that lie on a pixel of an image of shape ``(h, w)``.

    A point is inside when ``-0.5 <= x < w - 0.5`` and ``-0.5 <= y < h - 0.5`` (pixel-centre
    convention), i.e. when the pixel it is rendered on exists. NaN coordinates are outside.
    """
    h, w = _hw(img_shape)
    if isinstance(points, Tensor):
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f'points must have shape (N, 2), got {tuple(points.shape)}')
    else:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f'points must have shape (N, 2), got {points.shape}')
    x, y = points[:, 0], points[:, 1]
    return (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)


def crop_points(points: PointArray,
                crop_bbox: Sequence[int]) -> Tuple[PointArray, PointArray]:
    """Move points into the frame of ``img[y0:y1, x0:x1]``.

    Args:
        points: ``(N, 2)`` xy coordinates.
        crop_bbox: ``(x0, y0, x1, y1)`` in pixels, ``x1`` / ``y1`` exclusive (as an array slice).

    Returns:
        ``(shifted, keep)``: all points shifted by ``(-x0, -y0)`` and the bool mask of those that
        lie inside the crop (see :func:`points_inside`). Callers index their per-point arrays
        with ``keep``.
    """
    if len(crop_bbox) != 4:
        raise ValueError(f'crop_bbox must be (x0, y0, x1, y1), got {crop_bbox}')
    x0, y0, x1, y1 = (int(v) for v in crop_bbox)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f'crop_bbox must have x1 > x0 and y1 > y0, got {crop_bbox}')
    out = _as_float_points(points)
    out[:, 0] -= x0
    out[:, 1] -= y0
    return out, points_inside(out, (y1 - y0, x1 - x0))
