"""Tissue detection on a low-resolution copy of a slide, and the density heatmap drawn over it.

:func:`detect_tissue`: Otsu threshold of the HSV saturation (stained tissue is coloured, glass and
background are grey or white) or of the optical density, then morphological closing and opening,
hole filling and removal of small objects. Sizes are given in microns and converted with the
thumbnail's resolution, so the same settings work at any magnification.

:func:`tile_tissue_fraction`: the fraction of a tile's area that is tissue, from an integral image
of the mask (constant time per tile).
"""
import math
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

__all__ = ['detect_tissue', 'tile_tissue_fraction', 'TissueIntegral', 'render_density_map']

TISSUE_METHODS = ('saturation', 'od')


def _otsu(values: np.ndarray) -> Optional[float]:
    """Otsu threshold of ``values`` (None when they are constant)."""
    if values.size == 0 or values.min() == values.max():
        return None
    from skimage.filters import threshold_otsu
    return float(threshold_otsu(values))


def detect_tissue(rgb: np.ndarray,
                  mpp: Optional[float] = None,
                  method: str = 'saturation',
                  min_level: Optional[float] = None,
                  smooth_um: float = 8.0,
                  closing_um: float = 30.0,
                  opening_um: float = 15.0,
                  min_area_um2: float = 10000.0,
                  default_mpp: float = 8.0) -> np.ndarray:
    """Boolean tissue mask of a (low-resolution) RGB image.

    Args:
        rgb: ``H x W x 3`` uint8 RGB thumbnail.
        mpp: microns per pixel of ``rgb`` (``None``: ``default_mpp``, used only to size the
            morphology).
        method: ``'saturation'`` (HSV saturation in ``[0, 1]``) or ``'od'`` (mean optical density
            ``-log10((I + 1) / 256)`` over the channels).
        min_level: a pixel is never tissue below this value (default 0.07 saturation, 0.06 OD):
            keeps Otsu from splitting a blank slide's noise into "tissue".
        smooth_um: Gaussian blur of the feature before thresholding (sigma, microns).
        closing_um, opening_um: radii of the closing (fills gaps) then opening (drops specks).
        min_area_um2: connected tissue pieces smaller than this are dropped (10,000 um^2, a
            0.1 mm square); holes are filled.

    Returns:
        ``H x W`` bool mask (all False when there is no tissue).
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f'rgb must be an H x W x 3 uint8 image, got {rgb.shape} {rgb.dtype}')
    if method not in TISSUE_METHODS:
        raise ValueError(f'method must be one of {TISSUE_METHODS}, got {method!r}')
    mpp = float(mpp) if mpp else float(default_mpp)
    img = rgb[..., :3].astype(np.float32)
    if method == 'saturation':
        high, low = img.max(2), img.min(2)
        feature = np.where(high > 0, (high - low) / np.maximum(high, 1), 0.0)
        floor = 0.07 if min_level is None else float(min_level)
    else:
        feature = (-np.log10((img + 1.0) / 256.0)).mean(2)
        floor = 0.06 if min_level is None else float(min_level)
    if smooth_um > 0:
        feature = ndi.gaussian_filter(feature, sigma=smooth_um / mpp)
    thr = _otsu(feature.ravel())
    thr = floor if thr is None else max(thr, floor)
    mask = feature > thr

    import cv2

    def disk(radius_um):
        r = max(0, int(round(radius_um / mpp)))
        return None if r == 0 else cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                               (2 * r + 1, 2 * r + 1))

    closing, opening = disk(closing_um), disk(opening_um)
    mask = mask.astype(np.uint8)
    if closing is not None:
        # pad so that closing does not glue tissue to the image border
        pad = closing.shape[0]
        mask = cv2.morphologyEx(np.pad(mask, pad), cv2.MORPH_CLOSE, closing)[pad:-pad, pad:-pad]
    if opening is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, opening, borderType=cv2.BORDER_REPLICATE)
    mask = mask.astype(bool)
    mask = ndi.binary_fill_holes(mask)
    labels, num = ndi.label(mask)
    if num:
        areas = np.bincount(labels.ravel()) * mpp * mpp
        keep = areas >= min_area_um2
        keep[0] = False
        mask = keep[labels]
    return mask


class TissueIntegral:
    """Integral image of a tissue mask for O(1) tissue fractions of level-0 rectangles.

    Args:
        mask: ``H x W`` bool tissue mask of the thumbnail.
        downsample: level-0 pixels per mask pixel.
    """

    def __init__(self, mask: np.ndarray, downsample: float):
        self.mask = np.asarray(mask, bool)
        self.downsample = float(downsample)
        self._sum = np.pad(self.mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def fraction(self, x0: float, y0: float, x1: float, y1: float) -> float:
        """Fraction of tissue mask pixels touched by the level-0 rectangle ``[x0, x1) x [y0, y1)``
        (0 outside the mask)."""
        h, w = self.mask.shape
        d = self.downsample
        c0 = min(w, max(0, int(math.floor(x0 / d))))
        c1 = min(w, max(0, int(math.ceil(x1 / d))))
        r0 = min(h, max(0, int(math.floor(y0 / d))))
        r1 = min(h, max(0, int(math.ceil(y1 / d))))
        if c1 <= c0 or r1 <= r0:
            return 0.0
        s = self._sum
        inside = s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0]
        return float(inside) / ((r1 - r0) * (c1 - c0))


def tile_tissue_fraction(mask: np.ndarray, downsample: float, box: Tuple[float, float, float,
                                                                         float]) -> float:
    """One-off version of :meth:`TissueIntegral.fraction`."""
    return TissueIntegral(mask, downsample).fraction(*box)


def render_density_map(thumbnail: np.ndarray,
                       points0: np.ndarray,
                       downsample: float,
                       mpp0: float,
                       sigma_um: float = 50.0,
                       tissue: Optional[np.ndarray] = None,
                       alpha: float = 0.55) -> Tuple[np.ndarray, float]:
    """Cell density (cells / mm^2, Gaussian-smoothed) blended over the thumbnail.

    Args:
        thumbnail: ``H x W x 3`` uint8 RGB.
        points0: ``(N, 2)`` level-0 cell positions.
        downsample: level-0 pixels per thumbnail pixel.
        mpp0: level-0 microns per pixel.
        sigma_um: smoothing (Gaussian sigma) in microns.
        tissue: optional mask; density is only drawn inside it.

    Returns:
        ``(rgb, peak)``: the RGB picture (with a colour bar) and the peak density in cells/mm^2.
    """
    import cv2
    h, w = thumbnail.shape[:2]
    px_um = mpp0 * downsample
    counts = np.zeros((h, w), np.float64)
    if len(points0):
        cols = np.clip(np.floor((np.asarray(points0)[:, 0] + 0.5) / downsample), 0, w - 1)
        rows = np.clip(np.floor((np.asarray(points0)[:, 1] + 0.5) / downsample), 0, h - 1)
        np.add.at(counts, (rows.astype(np.int64), cols.astype(np.int64)), 1.0)
    density = ndi.gaussian_filter(counts, sigma=max(sigma_um / px_um, 0.5), mode='constant')
    density *= 1e6 / (px_um * px_um)    # cells per mm^2
    peak = float(density.max())
    norm = np.zeros_like(density) if peak <= 0 else density / peak
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = alpha * (norm > 0.02)
    if tissue is not None:
        weight = weight * tissue
    out = (thumbnail[..., :3] * (1 - weight[..., None]) + colour * weight[..., None])
    out = out.astype(np.uint8)
    # colour bar with its scale at the right
    bar_w = max(12, w // 40)
    bar = cv2.applyColorMap(np.linspace(255, 0, h).astype(np.uint8)[:, None].repeat(bar_w, 1),
                            cv2.COLORMAP_JET)[..., ::-1]
    canvas = np.full((h, w + bar_w + 120, 3), 255, np.uint8)
    canvas[:, :w] = out
    canvas[:, w + 4:w + 4 + bar_w] = bar
    font = 0.4 if h < 600 else 0.6
    cv2.putText(canvas, f'{peak:.0f}', (w + bar_w + 8, 16), cv2.FONT_HERSHEY_SIMPLEX, font,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, 'cells/mm2', (w + bar_w + 8, 36), cv2.FONT_HERSHEY_SIMPLEX, font,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, '0', (w + bar_w + 8, h - 6), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0),
                1, cv2.LINE_AA)
    return canvas, peak
