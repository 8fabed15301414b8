"""Points <-> per-class Gaussian heatmaps.

:class:`PointHeatmapCodec` is the only place in protocal that knows the heatmap geometry: how a set
of labelled points becomes the soft training target, and how a probability map becomes points again.
It is a plain object (no ``nn.Module``): encoding is torch code that runs on the device of its
inputs; the peak search of decoding runs in NumPy on the host (like the reference) and returns
tensors on the device of the probabilities.

Encoding (SEL/PCL spec, section 1.4)
    Every point of class ``c`` adds ``exp(-d^2 / (2 sigma^2))`` for ``d <= radius`` to channel
    ``c + 1``; each class channel is then clipped to ``[0, 1]`` and the background channel 0 is
    ``clip(1 - sum_c Y_c, 0, 1)``. The Gaussian is centred on the pixel the point lies on,
    ``(floor(x + 0.5), floor(y + 0.5))`` (pixel-centre convention of :mod:`protocal.structures`).
    For the integer coordinates of the reference datasets this is exactly the reference's
    ``int(x)`` truncation; for fractional coordinates (e.g. after a resize) it picks the pixel
    whose area contains the point, so the target moves with the image under flips and rotations.

Decoding (spec, section 6)
    The reference zeroes probabilities below the threshold and calls
    ``skimage.feature.peak_local_max(prob, min_distance=m, exclude_border=m // 2)`` per foreground
    channel. :meth:`PointHeatmapCodec.decode` returns *the same set of peaks* as
    ``peak_local_max(where(prob < thr, 0, prob), min_distance=m, threshold_abs=0,
    exclude_border=eb)`` -- i.e. pixels that are ``>= thr``, ``> 0``, equal to the maximum of their
    ``(2m + 1)^2`` window and at least ``eb`` pixels from the border, with plateaus and ties
    resolved greedily from the highest value (ties in raster order), dropping later peaks within
    Chebyshev distance ``< m`` of a kept one. On maps without values exactly equal to ``thr`` this
    equals ``peak_local_max(prob, min_distance=m, threshold_abs=thr, exclude_border=eb)``.

    Thresholds are compared in the map's dtype (as the reference's ``prob < t`` on a float32 map).
    Windows near the border are clipped to the image (skimage's ``mode='nearest'``).

    Decoding avoids the dense ``(2m + 1)^2`` maximum filter (the bulk of ``peak_local_max``'s
    time): a window maximum is the maximum of its own ``(m + 1)^2`` block, so the block maxima above
    threshold give a few candidates per block. Most are settled from block maxima alone (the 3x3
    neighbouring blocks contain the window; a larger neighbouring block maximum inside the window
    rejects; finer blocks bound the window from inside and outside) and only the rest is checked on
    its exact window. Two window maxima closer than ``m`` must be equal, so the greedy spacing only
    has to look at tied candidates.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmdet.registry import TASK_UTILS
from torch import Tensor

__all__ = ['PointHeatmapCodec']

ArrayLike = Union[Tensor, np.ndarray, Sequence]

# number of points rendered at once by ``encode``; bounds the (chunk, window) index tensors
_ENCODE_CHUNK = 4096


def _greedy_keep(coords: np.ndarray, order: np.ndarray, radius: float, p: float,
                 inclusive: bool) -> np.ndarray:
    """Greedy non-maximum suppression on points.

    Visits points in ``order`` (highest priority first) and drops every point that lies within
    ``radius`` of an already kept point (Minkowski ``p``-distance; ``< radius`` or, if
    ``inclusive``, ``<= radius``). Only points that have a close neighbour enter the Python loop.

    Args:
        coords: ``(n, d)`` float64 coordinates.
        order: ``(n,)`` permutation, highest priority first.
        radius: suppression radius.
        p: ``np.inf`` (Chebyshev) or ``2`` (Euclidean).
        inclusive: whether a point at exactly ``radius`` is suppressed.

    Returns:
        ``(n,)`` bool mask of kept points.
    """
    n = len(coords)
    keep = np.ones(n, dtype=bool)
    if n < 2 or radius <= 0:
        return keep
    from scipy.spatial import cKDTree
    pairs = cKDTree(coords).query_pairs(r=radius, p=p, output_type='ndarray')
    if len(pairs) == 0:
        return keep
    diff = np.abs(coords[pairs[:, 0]] - coords[pairs[:, 1]])
    dist = diff.max(1) if np.isinf(p) else np.sqrt((diff**2).sum(1))
    pairs = pairs[dist <= radius] if inclusive else pairs[dist < radius]
    if len(pairs) == 0:
        return keep
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    ra, rb = rank[pairs[:, 0]], rank[pairs[:, 1]]
    src, dst = np.minimum(ra, rb), np.maximum(ra, rb)  # edges from higher to lower priority
    srt = np.argsort(src, kind='stable')
    src, dst = src[srt], dst[srt]
    sources, starts = np.unique(src, return_index=True)
    ends = np.append(starts[1:], len(src))
    removed = np.zeros(n, dtype=bool)  # indexed by rank
    for s, b, e in zip(sources.tolist(), starts.tolist(), ends.tolist()):
        if not removed[s]:
            removed[dst[b:e]] = True
    return ~removed[rank]


def _block_max(x: np.ndarray, s: int) -> np.ndarray:
    """Maxima of ``x`` (C, H, W) over ``s x s`` blocks; the last row / column of blocks may be
    clipped. Returns (C, ceil(H / s), ceil(W / s)); NaN propagates."""
    k, h, w = x.shape
    hb, wb = h // s, w // s
    parts = [x[:, :hb * s].reshape(k, hb, s, w).max(2)] if hb else []
    if hb * s < h:
        parts.append(x[:, hb * s:].max(1, keepdims=True))
    rows = np.concatenate(parts, 1) if len(parts) > 1 else parts[0]
    parts = []
    if wb:
        # column blocks as s strided slices (a reduction over a short inner axis is slow)
        cols = rows[:, :, 0:wb * s:s].copy()
        for j in range(1, s):
            np.maximum(cols, rows[:, :, j:wb * s:s], out=cols)
        parts.append(cols)
    if wb * s < w:
        parts.append(rows[:, :, wb * s:].max(2, keepdims=True))
    return np.concatenate(parts, 2) if len(parts) > 1 else parts[0]


def _max3x3(x: np.ndarray) -> np.ndarray:
    """Maximum over the 3x3 neighbourhood of every element of ``x`` (C, h, w)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    rows = np.maximum(np.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
    return np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _block_argmaxes(x: np.ndarray, bmax: np.ndarray, active: np.ndarray,
                    s: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pixels of the ``active`` ``s x s`` blocks of ``x`` (C, H, W) that equal their block
    maximum ``bmax``. Returns their (channel, row, col) as int64 arrays."""
    k, h, w = x.shape
    hb, wb = h // s, w // s
    cs, ys, xs = [], [], []
    if hb and wb:
        # whole blocks: compare every pixel with the maximum of its block (inactive blocks set to
        # NaN, never equal), expanded along the columns so that the inner loop runs over rows
        ref = np.where(active[:, :hb, :wb], bmax[:, :hb, :wb], np.nan).astype(x.dtype)
        ref = np.repeat(ref, s, axis=2)  # (C, hb, wb * s)
        hit = x[:, :hb * s, :wb * s].reshape(k, hb, s, wb * s) == ref[:, :, None, :]
        idx = np.flatnonzero(hit)  # row-major over (C, hb * s, wb * s)
        plane = hb * s * wb * s
        rest = idx % plane
        cs.append(idx // plane)
        ys.append(rest // (wb * s))
        xs.append(rest % (wb * s))
    ragged = active.copy()
    ragged[:, :hb, :wb] = False
    oc, oi, oj = np.nonzero(ragged)
    if len(oc):
        # the last, clipped row / column of blocks
        r = np.arange(s)
        yy, xx = oi[:, None] * s + r, oj[:, None] * s + r  # (A, s)
        vals = x[oc[:, None, None], np.minimum(yy, h - 1)[:, :, None],
                 np.minimum(xx, w - 1)[:, None, :]]
        hit = ((vals == bmax[oc, oi, oj][:, None, None]) & (yy < h)[:, :, None]
               & (xx < w)[:, None, :])
        a, ry, rx = np.nonzero(hit)
        cs.append(oc[a])
        ys.append(yy[a, ry])
        xs.append(xx[a, rx])
    if not cs:
        return (np.zeros(0, dtype=np.int64), ) * 3
    return tuple(np.concatenate(v).astype(np.int64) for v in (cs, ys, xs))


def _drop_unsure(c: np.ndarray, y: np.ndarray, x: np.ndarray, v: np.ndarray, unsure: np.ndarray,
                 drop: np.ndarray) -> Tuple[np.ndarray, ...]:
    """Remove the candidates ``unsure[drop]``; returns the filtered ``c, y, x, v`` and the
    positions of the remaining unsure candidates in them."""
    if not drop.any():
        return c, y, x, v, unsure
    keep = np.ones(len(v), dtype=bool)
    keep[unsure[drop]] = False
    unsure = (np.cumsum(keep) - 1)[unsure[~drop]]
    return c[keep], y[keep], x[keep], v[keep], unsure


def _subblock_bounds(x: np.ndarray, b: int, m: int, c: np.ndarray, y: np.ndarray,
                     xx: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Decide window maxima from ``b x b`` block maxima where possible.

    For the ``(2m + 1)^2`` windows (clipped to the image) around pixels ``(c, y, xx)`` with values
    ``v``: ``reject`` where a block lying entirely inside the window has a larger maximum, and
    ``accept`` where no block intersecting the window has one. Candidates that are neither need
    the exact window.
    """
    k, h, w = x.shape
    g = _block_max(x, b)
    gh, gw = g.shape[1:]
    steps = np.arange((2 * m) // b + 2)

    def axis_masks(pos, size, n_blocks):
        lo, hi = np.maximum(pos - m, 0)[:, None], np.minimum(pos + m, size - 1)[:, None]
        idx = lo // b + steps  # blocks from the first one touching the window
        touch = (idx * b <= hi) & (idx < n_blocks)
        inside = touch & (idx * b >= lo) & (np.minimum((idx + 1) * b, size) - 1 <= hi)
        return np.minimum(idx, n_blocks - 1), touch, inside

    rows, row_touch, row_inside = axis_masks(y, h, gh)
    cols, col_touch, col_inside = axis_masks(xx, w, gw)
    vals = g[c[:, None, None], rows[:, :, None], cols[:, None, :]]
    larger = vals > v[:, None, None]
    reject = (larger & row_inside[:, :, None] & col_inside[:, None, :]).any((1, 2))
    accept = ~(larger & row_touch[:, :, None] & col_touch[:, None, :]).any((1, 2))
    return reject, accept


def _window_max(x: np.ndarray, c: np.ndarray, y: np.ndarray, xx: np.ndarray,
                radius: int) -> np.ndarray:
    """Maxima of the ``(2 radius + 1)^2`` windows of ``x`` (C, H, W) around pixels ``(c, y, xx)``,
    clipped to the image (the same maxima as skimage's ``mode='nearest'``).

    Window rows are copied as slices of a sliding-window view, so the index arrays have
    ``2 radius + 1`` entries per pixel instead of ``(2 radius + 1)^2``; row indices are clamped to
    the image (repeating a row inside the window does not change the maximum) and the few windows
    that cross the left or right border are gathered pixel by pixel.
    """
    k, h, w = x.shape
    size = 2 * radius + 1
    off = np.arange(-radius, radius + 1)
    ys = np.clip(y[:, None] + off, 0, h - 1)  # (n, size)
    out = np.empty(len(c), dtype=x.dtype)
    inner = (xx >= radius) & (xx + radius < w)
    if inner.any() and size <= w:
        rows = np.lib.stride_tricks.sliding_window_view(x, size, axis=2)  # no copy
        i = np.flatnonzero(inner)
        windows = rows[c[i, None], ys[i], (xx[i] - radius)[:, None]]  # (n, size, size)
        out[i] = windows.reshape(len(i), -1).max(1)
    else:
        inner[:] = False
    if not inner.all():
        i = np.flatnonzero(~inner)
        xs = np.clip(xx[i, None] + off, 0, w - 1)
        windows = x[c[i, None, None], ys[i][:, :, None], xs[:, None, :]]
        out[i] = windows.reshape(len(i), -1).max(1)
    return out


@TASK_UTILS.register_module()
class PointHeatmapCodec:
    """Encode labelled points into (K+1)-channel soft heatmaps and decode probability maps.

    Args:
        num_classes: number of foreground classes ``K``. Heatmap channel ``c + 1`` holds class ``c``
            and channel 0 is background.
        radius: radius of the truncated Gaussian disc in pixels (reference: 15).
        sigma: Gaussian standard deviation; ``None`` means ``radius / 2`` (reference: 7.5).
        score_thr: minimum probability of a peak, one float or a sequence of ``K`` per-class
            thresholds (reference: 0.7 for SEL, 0.1 for PCL).
        min_distance: ``m``; peaks are maxima of a ``(2m + 1)^2`` window and kept peaks of a class
            are at least ``m`` apart (Chebyshev), as in ``peak_local_max``. Must be >= 1.
        exclude_border: peaks closer than this many pixels to the border are dropped. ``None`` means
            ``min_distance // 2`` (reference); like skimage, ``True`` means ``min_distance`` and
            ``False`` means 0.
        cross_class_nms: if True, a peak is also dropped when a higher-scoring peak of any class
            lies within Euclidean distance ``<= min_distance`` (the reference decodes every class on
            its own, so one cell can be reported twice).
    """

    def __init__(self,
                 num_classes: int,
                 radius: float = 15,
                 sigma: Optional[float] = None,
                 score_thr: Union[float, Sequence[float]] = 0.5,
                 min_distance: int = 6,
                 exclude_border: Optional[Union[bool, int]] = None,
                 cross_class_nms: bool = False) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'PointHeatmapCodec: num_classes must be a positive int, '
                             f'got {num_classes!r}')
        self.num_classes = num_classes

        radius = float(radius)
        if not np.isfinite(radius) or radius <= 0:
            raise ValueError(f'PointHeatmapCodec: radius must be positive, got {radius}')
        self.radius = radius
        sigma = radius / 2 if sigma is None else float(sigma)
        if not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f'PointHeatmapCodec: sigma must be positive, got {sigma}')
        self.sigma = sigma

        thr = torch.as_tensor(score_thr, dtype=torch.float32).reshape(-1)
        if thr.numel() == 1:
            thr = thr.expand(num_classes).clone()
        if thr.numel() != num_classes:
            raise ValueError(f'PointHeatmapCodec: score_thr must be a float or {num_classes} '
                             f'per-class values, got {score_thr!r}')
        if not bool(((thr >= 0) & (thr <= 1)).all()):
            raise ValueError(f'PointHeatmapCodec: score_thr must lie in [0, 1], got {score_thr!r}')
        self.score_thr = thr

        if (isinstance(min_distance, bool) or not isinstance(min_distance, (int, np.integer))
                or min_distance < 1):
            raise ValueError(f'PointHeatmapCodec: min_distance must be an int >= 1, '
                             f'got {min_distance!r}')
        self.min_distance = int(min_distance)

        if exclude_border is None:
            exclude_border = self.min_distance // 2
        elif isinstance(exclude_border, bool):
            exclude_border = self.min_distance if exclude_border else 0
        elif not isinstance(exclude_border, (int, np.integer)) or exclude_border < 0:
            raise ValueError(f'PointHeatmapCodec: exclude_border must be None, a bool or an int '
                             f'>= 0, got {exclude_border!r}')
        self.exclude_border = int(exclude_border)
        self.cross_class_nms = bool(cross_class_nms)

        # the Gaussian stamp: offsets inside the disc and their values (centres are whole pixels)
        half = int(np.floor(radius))
        oy, ox = np.mgrid[-half:half + 1, -half:half + 1]
        d2 = (ox**2 + oy**2).ravel().astype(np.float64)
        inside = d2 <= radius**2
        self._offsets = torch.from_numpy(np.stack([ox.ravel()[inside], oy.ravel()[inside]], 1))
        self._stamp = torch.from_numpy(np.exp(-d2[inside] / (2 * sigma**2)).astype(np.float32))
        self._half = half

    def __repr__(self) -> str:
        thr = self.score_thr.tolist()
        thr = thr[0] if len(set(thr)) == 1 else thr
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, radius={self.radius}, '
                f'sigma={self.sigma}, score_thr={thr}, min_distance={self.min_distance}, '
                f'exclude_border={self.exclude_border}, cross_class_nms={self.cross_class_nms})')

    # ------------------------------------------------------------------------------------------
    # input checks
    @staticmethod
    def _check_shape(shape: Sequence[int]) -> Tuple[int, int]:
        if len(shape) != 2 or int(shape[0]) < 1 or int(shape[1]) < 1:
            raise ValueError(f'PointHeatmapCodec: shape must be (H, W) with H, W >= 1, '
                             f'got {tuple(shape)}')
        return int(shape[0]), int(shape[1])

    def _check_points(self, points: ArrayLike, labels: Optional[ArrayLike],
                      device: torch.device) -> Tuple[Tensor, Optional[Tensor]]:
        """Validate and convert to a float (N, 2) tensor and an int64 (N,) tensor on ``device``."""
        points = torch.as_tensor(points, device=device)
        if points.numel() == 0:
            points = points.reshape(0, 2)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f'PointHeatmapCodec: points must have shape (N, 2), '
                             f'got {tuple(points.shape)}')
        if not points.is_floating_point():
            points = points.float()
        if not bool(torch.isfinite(points).all()):
            raise ValueError('PointHeatmapCodec: points contain NaN or inf')
        if labels is None:
            return points, None
        labels = torch.as_tensor(labels, device=device).reshape(-1)
        if labels.numel() != len(points):
            raise ValueError(f'PointHeatmapCodec: got {len(points)} points but {labels.numel()} '
                             f'labels')
        if labels.numel() and (labels.is_floating_point() or labels.dtype == torch.bool):
            raise ValueError(f'PointHeatmapCodec: labels must be integers, got {labels.dtype}')
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f'PointHeatmapCodec: labels must lie in [0, {self.num_classes}), got '
                             f'[{int(labels.min())}, {int(labels.max())}]')
        return points, labels

    def _disc_indices(self, points: Tensor, shape: Tuple[int, int], base: Optional[Tensor] = None):
        """Flat pixel indices of the discs of the points whose disc touches an image of ``shape``.

        Yields chunks ``(point_idx (n,), flat index (n, P), valid)``, with ``P`` the number of disc
        pixels and ``base[point_idx]`` (default 0) added to the indices. ``valid`` (n, P) marks the
        pixels inside the image; it is ``None`` for chunks of points whose disc lies entirely inside
        it (most points), which need no per-pixel checks.
        """
        h, w = shape
        r = self._half
        # clamped so that far-away points cannot overflow int64; they stay outside the image
        centre = torch.floor(points.clamp(-2.0**40, 2.0**40) + 0.5).long()
        cx, cy = centre[:, 0], centre[:, 1]
        start = cy * w + cx if base is None else base + cy * w + cx
        offsets = self._offsets.to(points.device)
        flat_offsets = offsets[:, 1] * w + offsets[:, 0]
        inner = (cx >= r) & (cx < w - r) & (cy >= r) & (cy < h - r)
        near = (cx >= -r) & (cx < w + r) & (cy >= -r) & (cy < h + r)
        for idx, check in ((inner.nonzero().squeeze(1), False),
                           ((near & ~inner).nonzero().squeeze(1), True)):
            for first in range(0, len(idx), _ENCODE_CHUNK):
                sel = idx[first:first + _ENCODE_CHUNK]
                flat = start[sel, None] + flat_offsets
                valid = None
                if check:
                    xs = cx[sel, None] + offsets[:, 0]
                    ys = cy[sel, None] + offsets[:, 1]
                    valid = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
                yield sel, flat, valid

    # ------------------------------------------------------------------------------------------
    # encoding
    def encode(self, points: ArrayLike, labels: ArrayLike, shape: Sequence[int]) -> Tensor:
        """Render the soft heatmap of one image.

        Args:
            points: ``(N, 2)`` xy pixel coordinates (tensor or array); points outside the image are
                allowed (only the part of their disc inside the image is drawn).
            labels: ``(N,)`` 0-based class indices.
            shape: ``(H, W)`` of the heatmap.

        Returns:
            ``(K + 1, H, W)`` float32 tensor on the device of ``points`` (CPU for arrays); channel 0
            is background. No points gives background ones.
        """
        return self.encode_batch([points], [labels], shape)[0]

    def encode_batch(self, points_list: Sequence[ArrayLike], labels_list: Sequence[ArrayLike],
                     shape: Sequence[int]) -> Tensor:
        """Render ``(B, K + 1, H, W)`` heatmaps for ``B`` images of the same ``shape``."""
        h, w = self._check_shape(shape)
        if len(points_list) != len(labels_list):
            raise ValueError(f'PointHeatmapCodec: {len(points_list)} point sets but '
                             f'{len(labels_list)} label sets')
        device = next((p.device for p in points_list if isinstance(p, Tensor)),
                      torch.device('cpu'))
        num_imgs, k = len(points_list), self.num_classes
        out = torch.zeros(num_imgs, k + 1, h, w, dtype=torch.float32, device=device)
        flat_out = out.view(-1)
        stamp = self._stamp.to(device)
        for b, (points, labels) in enumerate(zip(points_list, labels_list)):
            points, labels = self._check_points(points, labels, device)
            bg_start = b * (k + 1) * h * w
            base = bg_start + (labels + 1) * (h * w)  # first pixel of each point's channel
            for sel, flat, valid in self._disc_indices(points, (h, w), base):
                if valid is None:
                    values = stamp.expand(len(sel), -1).reshape(-1)
                else:
                    # pixels outside the image add 0 to the first background pixel, which is
                    # overwritten below
                    flat = torch.where(valid, flat, bg_start)
                    values = (stamp * valid).view(-1)
                flat_out.scatter_add_(0, flat.view(-1), values)
        fg = out[:, 1:].clamp_(0, 1)
        out[:, 0] = (1 - fg.sum(1)).clamp_(0, 1)
        return out

    def annotated_mask(self, points: ArrayLike, shape: Sequence[int]) -> Tensor:
        """``(H, W)`` bool mask of the pixels covered by the discs (``d <= radius``) of ``points``;
        the support of the heatmap they render, whatever their class."""
        h, w = self._check_shape(shape)
        device = points.device if isinstance(points, Tensor) else torch.device('cpu')
        points, _ = self._check_points(points, None, device)
        mask = torch.zeros(h * w, dtype=torch.bool, device=device)
        for _, flat, valid in self._disc_indices(points, (h, w)):
            mask[flat if valid is None else flat[valid]] = True
        return mask.view(h, w)

    # ------------------------------------------------------------------------------------------
    # decoding
    def _candidates(self, fg: np.ndarray) -> Tuple[np.ndarray, ...]:
        """Window maxima of the thresholded foreground maps ``fg`` (K, H, W), border excluded.

        Returns (class, row, col, value) arrays of all pixels ``v`` with ``v >= thr_c``, ``v > 0``
        and no pixel of the ``(2m + 1)^2`` window (clamped to the image) larger than ``v``.
        """
        k, h, w = fg.shape
        m, s = self.min_distance, self.min_distance + 1
        # compared in the map's dtype, like the reference's ``prob < t`` on a float32 map
        thr = self.score_thr.numpy().astype(fg.dtype)
        # 1) a window maximum is the maximum of its own (m + 1)^2 block, which lies inside its
        #    window: candidates are the pixels equal to the maximum of a block above threshold
        bmax = _block_max(fg, s)
        if np.isnan(bmax).any() or (bmax == np.inf).any():  # block maxima propagate NaN
            raise ValueError('PointHeatmapCodec.decode: probs contain NaN or inf')
        active = (bmax >= thr[:, None, None]) & (bmax > 0)
        c, y, x = _block_argmaxes(fg, bmax, active, s)
        bi, bj = y // s, x // s
        v = bmax[c, bi, bj]
        # 2) the window lies inside the 3x3 neighbouring blocks: sure if v beats all of them
        unsure = np.flatnonzero(v < _max3x3(bmax)[c, bi, bj])
        if len(unsure):
            # 3) reject if a larger block maximum of a neighbouring block lies inside the window;
            #    every active block has its maximum pixels among the candidates, so keep one
            #    representative position per block (blocks below threshold cannot beat v)
            rep = np.full((2, k, bmax.shape[1] + 2, bmax.shape[2] + 2), -(2 * m + 2),
                          dtype=np.int64)
            rep[0, c, bi + 1, bj + 1], rep[1, c, bi + 1, bj + 1] = y, x
            nmax = np.pad(bmax, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
            uc, ubi, ubj = c[unsure, None], bi[unsure, None] + 1, bj[unsure, None] + 1
            ni = ubi + np.array([-1, -1, -1, 0, 0, 1, 1, 1])
            nj = ubj + np.array([-1, 0, 1, -1, 1, -1, 0, 1])
            beaten = ((nmax[uc, ni, nj] > v[unsure, None])
                      & (np.abs(rep[0, uc, ni, nj] - y[unsure, None]) <= m)
                      & (np.abs(rep[1, uc, ni, nj] - x[unsure, None]) <= m)).any(1)
            c, y, x, v, unsure = _drop_unsure(c, y, x, v, unsure, beaten)
        # 4) exact 3x3 windows: a cheap rejection of most of the rest
        if len(unsure):
            ok = _window_max(fg, c[unsure], y[unsure], x[unsure], 1) <= v[unsure]
            c, y, x, v, unsure = _drop_unsure(c, y, x, v, unsure, ~ok)
        # 5) bounds from finer blocks: reject if a block inside the window is larger, accept if
        #    no block touching the window is larger
        if len(unsure) and s >= 6:
            reject, accept = _subblock_bounds(fg, s // 3, m, c[unsure], y[unsure], x[unsure],
                                              v[unsure])
            c, y, x, v, unsure = _drop_unsure(c, y, x, v, unsure, reject)
            unsure = unsure[~accept[~reject]]
        # 6) the exact (2m + 1)^2 window for the rest
        if len(unsure):
            ok = _window_max(fg, c[unsure], y[unsure], x[unsure], m) <= v[unsure]
            c, y, x, v, unsure = _drop_unsure(c, y, x, v, unsure, ~ok)
        # skimage returns no peak when every pixel equals its window maximum (a constant map)
        for ch in np.flatnonzero(active.reshape(k, -1).all(1)):
            if fg[ch].min() == fg[ch].max():
                keep = c != ch
                c, y, x, v = c[keep], y[keep], x[keep], v[keep]
        eb = self.exclude_border
        if eb:
            keep = (y >= eb) & (y < h - eb) & (x >= eb) & (x < w - eb)
            c, y, x, v = c[keep], y[keep], x[keep], v[keep]
        return c, y, x, v

    def decode(self, probs: Union[Tensor, np.ndarray]) -> Dict[str, Tensor]:
        """Extract points from the softmax probabilities of one image.

        The peak search runs in NumPy on the CPU (a GPU map is copied to the host first); the
        results are returned on the device of ``probs``.

        Args:
            probs: ``(K + 1, H, W)`` probabilities (channel 0 background, ignored).

        Returns:
            dict with ``points`` float32 ``(M, 2)`` xy, ``labels`` int64 ``(M,)`` and ``scores``
            float32 ``(M,)`` (the probability at the peak), on the device of ``probs``; grouped by
            class, highest score first within a class.
        """
        probs = torch.as_tensor(probs).detach()
        if probs.ndim != 3 or probs.shape[0] != self.num_classes + 1:
            raise ValueError(f'PointHeatmapCodec.decode: probs must have shape '
                             f'({self.num_classes + 1}, H, W), got {tuple(probs.shape)}')
        if not probs.is_floating_point():
            raise ValueError(f'PointHeatmapCodec.decode: probs must be floating point, '
                             f'got {probs.dtype}')
        device = probs.device
        fg = probs[1:]
        if fg.numel() == 0:
            return self._empty(device)
        if fg.dtype not in (torch.float32, torch.float64):
            fg = fg.float()
        c_np, y_np, x_np, v_np = self._candidates(np.ascontiguousarray(fg.cpu().numpy()))
        if len(v_np) == 0:
            return self._empty(device)

        # highest value first, ties in raster order (as peak_local_max's stable argsort)
        h, w = fg.shape[-2:]
        order = np.lexsort((y_np * w + x_np, -v_np.astype(np.float64), c_np))
        c_np, y_np, x_np, v_np = c_np[order], y_np[order], x_np[order], v_np[order]

        m = self.min_distance
        if m > 1:
            # two window maxima within Chebyshev distance m have equal values: only ties can clash
            same = (c_np[1:] == c_np[:-1]) & (v_np[1:] == v_np[:-1])
            if same.any():
                tied = np.zeros(len(v_np), dtype=bool)
                tied[1:] |= same
                tied[:-1] |= same
                idx = np.flatnonzero(tied)
                # shift classes apart so that one KD-tree handles all of them
                gap = float(w + 2 * m + 2)
                coords = np.stack([y_np[idx], x_np[idx] + c_np[idx] * gap], 1).astype(np.float64)
                keep = np.ones(len(v_np), dtype=bool)
                keep[idx] = _greedy_keep(coords, np.arange(len(idx)), m, np.inf, inclusive=False)
                c_np, y_np, x_np, v_np = c_np[keep], y_np[keep], x_np[keep], v_np[keep]

        if self.cross_class_nms and self.num_classes > 1 and len(v_np) > 1:
            keep = _greedy_keep(
                np.stack([x_np, y_np], 1).astype(np.float64),
                np.lexsort((np.arange(len(v_np)), -v_np.astype(np.float64))), m, 2,
                inclusive=True)
            c_np, y_np, x_np, v_np = c_np[keep], y_np[keep], x_np[keep], v_np[keep]

        points = torch.from_numpy(np.stack([x_np, y_np], 1).astype(np.float32))
        return dict(
            points=points.to(device),
            labels=torch.from_numpy(c_np.astype(np.int64)).to(device),
            scores=torch.from_numpy(v_np.astype(np.float32)).to(device))

    def decode_batch(self, probs: Union[Tensor, np.ndarray]) -> List[Dict[str, Tensor]]:
        """Decode ``(B, K + 1, H, W)`` probabilities into a list of ``B`` result dicts."""
        probs = torch.as_tensor(probs)
        if probs.ndim != 4:
            raise ValueError(f'PointHeatmapCodec.decode_batch: probs must have shape '
                             f'(B, {self.num_classes + 1}, H, W), got {tuple(probs.shape)}')
        return [self.decode(p) for p in probs]

    @staticmethod
    def _empty(device: torch.device) -> Dict[str, Tensor]:
        return dict(
            points=torch.zeros(0, 2, dtype=torch.float32, device=device),
            labels=torch.zeros(0, dtype=torch.int64, device=device),
            scores=torch.zeros(0, dtype=torch.float32, device=device))

    # ------------------------------------------------------------------------------------------
    # merging detections (e.g. of overlapping sliding-window tiles)
    def suppress_duplicates(self, points: ArrayLike, labels: ArrayLike,
                            scores: ArrayLike) -> Tensor:
        """Indices of the detections to keep after greedy duplicate suppression.

        Visits detections by descending score (ties in input order) and drops one when a kept
        detection of the same label lies within Chebyshev distance ``< min_distance`` (the spacing
        rule of :meth:`decode` / ``peak_local_max``). With ``cross_class_nms`` the survivors then go
        through the cross-class step of :meth:`decode` (any label, Euclidean ``<= min_distance``).

        Args:
            points: ``(M, 2)`` xy coordinates.
            labels: ``(M,)`` integer labels.
            scores: ``(M,)`` scores.

        Returns:
            int64 tensor of kept indices in ascending order, on the device of ``points``.
        """
        device = points.device if isinstance(points, Tensor) else torch.device('cpu')
        pts, lbl = self._check_points(points, labels, device)
        scr = torch.as_tensor(scores, device=device).reshape(-1)
        if scr.numel() != len(pts):
            raise ValueError(f'PointHeatmapCodec.suppress_duplicates: got {len(pts)} points but '
                             f'{scr.numel()} scores')
        if not bool(torch.isfinite(scr.float()).all()):
            raise ValueError('PointHeatmapCodec.suppress_duplicates: scores contain NaN or inf')
        pts_np = pts.detach().cpu().double().numpy()
        lbl_np = lbl.cpu().numpy()
        scr_np = scr.detach().cpu().double().numpy()
        n = len(pts_np)
        if n == 0:
            return torch.zeros(0, dtype=torch.int64, device=device)
        m = self.min_distance
        order = np.lexsort((np.arange(n), -scr_np))
        # shift labels apart along x so that one KD-tree only ever pairs points of one label
        span = float(pts_np[:, 0].max() - pts_np[:, 0].min()) + 2 * m + 2
        shifted = pts_np.copy()
        shifted[:, 0] += lbl_np * span
        keep = _greedy_keep(shifted, order, m, np.inf, inclusive=False)
        idx = np.flatnonzero(keep)
        if self.cross_class_nms and len(idx) > 1:
            sub_order = np.lexsort((np.arange(len(idx)), -scr_np[idx]))
            idx = idx[_greedy_keep(pts_np[idx], sub_order, m, 2, inclusive=True)]
        return torch.from_numpy(idx.astype(np.int64)).to(device)
