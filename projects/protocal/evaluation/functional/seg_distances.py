"""Dice, HD95 and average surface distances of binary masks (2D images or 3D volumes).

Definitions follow medpy 0.4 (``medpy.metric.binary``), the library the ProCNS / WSL4MIS code
evaluates with:

* surface of a mask = mask XOR its erosion by the connectivity-1 cross (pixels on the image border
  belong to the surface);
* ``d(A -> B)`` = Euclidean distance (``spacing`` units) of every surface pixel of ``A`` to the
  nearest surface pixel of ``B``, from one exact distance transform
  (``scipy.ndimage.distance_transform_edt``) of B's surface complement -- no Python loop over
  pixels;
* ``HD95 = percentile_95(d(P -> G) U d(G -> P))``, ``ASD = mean d(P -> G)`` (medpy ``asd``),
  ``ASSD = (mean d(P -> G) + mean d(G -> P)) / 2`` (medpy ``assd``).

Empty masks (medpy raises; the reference scores 0 for everything, which rewards empty
predictions with a perfect distance) follow ``empty``:

* ``'penalty'`` (default): both empty -> Dice 1, distances 0; exactly one empty -> Dice 0 and
  every distance = the image diagonal (the largest distance possible in the image);
* ``'nan'``: exactly one empty -> Dice 0, distances NaN (means skip them; the count is reported);
* ``'reference'``: exactly one empty -> everything 0 (ProCNS ``test_WSL.py`` parity); both
  empty -> everything 0 as well.
"""
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ['EMPTY_CONVENTIONS', 'surface', 'surface_distances', 'binary_seg_metrics']

EMPTY_CONVENTIONS = ('penalty', 'nan', 'reference')


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface pixels of a boolean mask (medpy definition)."""
    structure = ndi.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndi.binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(source: np.ndarray, target: np.ndarray,
                      spacing: Optional[Sequence[float]] = None) -> np.ndarray:
    """Distances of every surface pixel of ``source`` to the surface of ``target`` (both
    non-empty)."""
    target_surface = surface(target)
    dist = ndi.distance_transform_edt(~target_surface, sampling=spacing)
    return dist[surface(source)]


def binary_seg_metrics(pred: np.ndarray, gt: np.ndarray,
                       spacing: Optional[Sequence[float]] = None,
                       empty: str = 'penalty', percentile: float = 95.0) -> Dict[str, float]:
    """Dice, HD95 (``percentile``), ASD and ASSD of one binary prediction against its ground truth.

    Args:
        pred, gt: boolean arrays of the same shape (2D or 3D).
        spacing: pixel size per axis (default 1).
        empty: convention for empty masks (see the module docstring).
    """
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f'empty must be one of {EMPTY_CONVENTIONS}, got {empty!r}')
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f'prediction {pred.shape} and ground truth {gt.shape} differ in shape')
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    if n_pred == 0 or n_gt == 0:
        if empty == 'reference':
            return dict(dice=0.0, hd95=0.0, asd=0.0, assd=0.0)
        if n_pred == 0 and n_gt == 0:
            return dict(dice=1.0, hd95=0.0, asd=0.0, assd=0.0)
        if empty == 'nan':
            return dict(dice=0.0, hd95=float('nan'), asd=float('nan'), assd=float('nan'))
        sizes = np.asarray(pred.shape, dtype=np.float64)
        if spacing is not None:
            sizes = sizes * np.asarray(spacing, dtype=np.float64)
        diagonal = float(np.sqrt((sizes ** 2).sum()))
        return dict(dice=0.0, hd95=diagonal, asd=diagonal, assd=diagonal)
    dice = 2.0 * float((pred & gt).sum()) / (n_pred + n_gt)
    d_pg = surface_distances(pred, gt, spacing)
    d_gp = surface_distances(gt, pred, spacing)
    return dict(
        dice=dice,
        hd95=float(np.percentile(np.concatenate([d_pg, d_gp]), percentile)),
        asd=float(d_pg.mean()),
        assd=float((d_pg.mean() + d_gp.mean()) / 2))
