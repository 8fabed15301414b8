"""Counting metrics (numpy): quadratic weighted kappa over the LYSTO count categories, MAE, MSE.

LYSTO's challenge metric is Cohen's kappa with quadratic weights over the **7 count categories**
(``0, 1-5, 6-10, 11-20, 21-50, 51-200, >200``)::

    kappa = 1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij,   w_ij = (i - j)^2 / (N - 1)^2,  N = 7
    O = confusion matrix (GT category, predicted category),  E = outer(hist_gt, hist_pred) / n

The reference's validation computes it on raw counts (N inferred from the data), which is not the
challenge number; here the categories are always used and ``N`` is fixed to 7.
"""
from typing import Dict

import numpy as np

__all__ = ['quadratic_weighted_kappa', 'count_metrics']


def quadratic_weighted_kappa(gt, pred, num_ratings: int = 7) -> float:
    """Quadratic weighted kappa of two integer rating vectors in ``[0, num_ratings)``.

    The kappa is undefined when every GT and every prediction fall in one single category (the
    expected disagreement is 0); it is then reported as ``1.0`` (perfect agreement), never NaN.
    An empty input raises ``ValueError``.
    """
    gt = np.asarray(gt).reshape(-1)
    pred = np.asarray(pred).reshape(-1)
    if gt.shape != pred.shape:
        raise ValueError(f'gt and pred must have the same length, got {gt.shape} and {pred.shape}')
    if gt.size == 0:
        raise ValueError('quadratic_weighted_kappa needs at least one rating')
    for name, v in (('gt', gt), ('pred', pred)):
        if not np.issubdtype(v.dtype, np.integer) and not np.array_equal(v, np.round(v)):
            raise ValueError(f'{name} ratings must be integers (categorise counts first)')
        if v.min() < 0 or v.max() >= num_ratings:
            raise ValueError(f'{name} ratings must lie in [0, {num_ratings - 1}], got '
                             f'[{v.min()}, {v.max()}]')
    gt, pred = gt.astype(np.int64), pred.astype(np.int64)
    n = float(gt.size)
    observed = np.zeros((num_ratings, num_ratings))
    np.add.at(observed, (gt, pred), 1.0)
    hist_gt = observed.sum(1)
    hist_pred = observed.sum(0)
    expected = np.outer(hist_gt, hist_pred) / n
    idx = np.arange(num_ratings)
    weights = (idx[:, None] - idx[None, :])**2 / float((num_ratings - 1)**2)
    num = float((weights * observed).sum())
    den = float((weights * expected).sum())
    if den == 0.0:
        return 1.0 if num == 0.0 else 0.0
    return 1.0 - num / den


def count_metrics(gt_counts, pred_counts, num_ratings: int = 7) -> Dict[str, float]:
    """Kappa (categories), category accuracy, MAE / MSE / mean signed error on counts.

    ``pred_counts`` may be real-valued (regression outputs); they are rounded (``np.rint``) for
    the categories and for MAE/MSE, as the reference's ``round(reg)``.
    """
    from protocal.datasets.counting import count_to_category  # lazy: avoids a mmseg import here
    gt = np.asarray(gt_counts, np.float64).reshape(-1)
    pred = np.rint(np.clip(np.asarray(pred_counts, np.float64).reshape(-1), 0, None))
    if gt.shape != pred.shape:
        raise ValueError(f'{len(gt)} GT counts but {len(pred)} predictions')
    if gt.size == 0:
        raise ValueError('count_metrics needs at least one image')
    gc, pc = count_to_category(gt), count_to_category(pred)
    err = pred - gt
    return dict(
        kappa=quadratic_weighted_kappa(gc, pc, num_ratings),
        cls_accuracy=float((gc == pc).mean()),
        mae=float(np.abs(err).mean()),
        mse=float((err**2).mean()),
        mean_error=float(err.mean()),
        images=int(gt.size))
