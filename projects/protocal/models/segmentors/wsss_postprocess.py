"""CAM -> pseudo-mask post-processing shared by WSSS segmentors (LPD).

* :func:`normalise_cams` -- ReLU, per-channel min-max over H x W, gate by image labels, resize
  (the reference's ``get_seg_label``).
* :func:`add_background` -- ``bg = (1 - max_c F_c) ** power`` appended as the **last** channel.
* :func:`dense_crf` -- optional fully connected CRF through the ``pydensecrf2`` package (PyPI,
  builds on Python 3.11 with a C++ compiler; no system library). Imported lazily.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['normalise_cams', 'add_background', 'dense_crf', 'crf_available', 'DEFAULT_CRF']

# LPD utils/crf.py: Gaussian sxy 15 / compat 30, bilateral sxy 10 / srgb 20 / compat 50, 5 iters
DEFAULT_CRF = dict(gaussian_sxy=15, gaussian_compat=30, bilateral_sxy=10, bilateral_srgb=20,
                   bilateral_compat=50, iterations=5)


def normalise_cams(cams: Tensor, labels: Optional[Tensor], size: Tuple[int, int]) -> Tensor:
    """(B, C, h, w) class maps -> (B, C, H, W) in [0, 1].

    ReLU, then ``(x - min) / (max - min + 1e-6)`` per image and channel, multiplied by the
    image-level labels (absent classes -> 0), bilinearly resized (align_corners=True).
    """
    cams = F.relu(cams)
    flat = cams.flatten(2)
    low = flat.min(-1)[0][..., None, None]
    high = flat.max(-1)[0][..., None, None]
    cams = (cams - low) / (high - low + 1e-6)
    if labels is not None:
        cams = cams * labels.to(cams.dtype)[:, :, None, None]
    if tuple(cams.shape[-2:]) != tuple(size):
        cams = F.interpolate(cams, size=tuple(size), mode='bilinear', align_corners=True)
    return cams


def add_background(fused: Tensor, power: float = 10.0) -> Tensor:
    """Append ``bg = (1 - max_c F_c) ** power`` as the last channel: (B, C, ...) -> (B, C+1, ...)."""
    bg = (1 - fused.max(1, keepdim=True)[0]).clamp(min=0) ** power
    return torch.cat([fused, bg], 1)


def crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def dense_crf(image: np.ndarray, probs: np.ndarray, gaussian_sxy: float = 15,
              gaussian_compat: float = 30, bilateral_sxy: float = 10,
              bilateral_srgb: float = 20, bilateral_compat: float = 50,
              iterations: int = 5) -> np.ndarray:
    """Refine class probabilities with a dense CRF (unary = -log p), as in LPD ``utils/crf.py``.

    Args:
        image: (H, W, 3) uint8 image.
        probs: (L, H, W) float probabilities (each pixel sums to 1).

    Returns:
        (L, H, W) float32 CRF marginals.
    """
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('dense CRF needs the pydensecrf2 package: pip install pydensecrf2==1.1 '
                          '(builds with a C++ compiler), or run without CRF') from err
    labels, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    probs = np.clip(probs.astype(np.float32), 1e-8, 1.0)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb,
                             rgbim=np.ascontiguousarray(image.astype(np.uint8)),
                             compat=bilateral_compat)
    q = crf.inference(iterations)
    return np.asarray(q, dtype=np.float32).reshape(labels, height, width)
