"""The BCSS-WSSS benchmark metric (LPD / PBIP ``ConfusionMatrixAllClass``), mmseg ``METRICS``.

One **dataset-level** confusion matrix over all classes *including background* (every pixel of
every image; GT pixels outside ``[0, L)`` are ignored). A background pixel predicted as a tissue
class is a false positive of that class. ``mIoU`` / ``mDice`` average over the **tissue
(foreground) classes only**; ``FwIoU`` weights all classes (background included) by GT frequency.
This differs from mmseg's ``IoUMetric`` (mean over all classes) and from ``ignore_index=4``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmseg.registry import METRICS

__all__ = ['WSSSIoUMetric', 'confusion_matrix', 'wsss_scores']


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_labels: int) -> np.ndarray:
    """(L, L) int64 matrix ``H[gt, pred]`` over pixels with ``0 <= gt < L``."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    keep = (gt >= 0) & (gt < num_labels)
    return np.bincount(num_labels * gt[keep] + pred[keep],
                       minlength=num_labels**2).reshape(num_labels, num_labels)


def wsss_scores(hist: np.ndarray, fg_classes: Optional[Sequence[int]] = None) -> Dict[str, object]:
    """Scores of a confusion matrix ``H[gt, pred]``.

    Args:
        hist: (L, L) counts.
        fg_classes: indices averaged by mIoU / mDice; default all but the last (background).

    Returns:
        dict with ``iou`` / ``dice`` / ``recall`` (L,) arrays (NaN where a class is absent from
        both GT and prediction), ``mIoU``, ``mDice``, ``FwIoU``, ``aAcc`` (fractions, not %).
    """
    hist = np.asarray(hist, dtype=np.float64)
    num = hist.shape[0]
    if fg_classes is None:
        fg_classes = list(range(num - 1))
    tp = np.diag(hist)
    gt_sum = hist.sum(1)
    pred_sum = hist.sum(0)
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = tp / (gt_sum + pred_sum - tp)
        dice = 2 * tp / (gt_sum + pred_sum)
        recall = tp / gt_sum
    total = hist.sum()
    freq = gt_sum / total if total > 0 else np.zeros(num)
    fw = float(np.nansum(freq * iou))
    fg = list(fg_classes)
    return dict(iou=iou, dice=dice, recall=recall,
                mIoU=float(np.nanmean(iou[fg])) if np.isfinite(iou[fg]).any() else float('nan'),
                mDice=float(np.nanmean(dice[fg])) if np.isfinite(dice[fg]).any() else float('nan'),
                FwIoU=fw, aAcc=float(tp.sum() / total) if total > 0 else float('nan'))


@METRICS.register_module()
class WSSSIoUMetric(BaseMetric):
    """mIoU / mDice over tissue classes from one dataset-level confusion matrix with background.

    Args:
        bg_index: index of the background class in ``dataset_meta['classes']`` (default -1: the
            last class, protocal's WSSS convention; 4 for BCSS-WSSS).
        per_class: also return ``IoU.<class>`` / ``Dice.<class>`` entries.

    Returns metrics in percent: ``mIoU``, ``mDice``, ``FwIoU``, ``aAcc``.
    """

    default_prefix: Optional[str] = None

    def __init__(self, bg_index: int = -1, per_class: bool = True, collect_device: str = 'cpu',
                 prefix: Optional[str] = None, **kwargs) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.bg_index = bg_index
        self.per_class = per_class

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        num = len(self.dataset_meta['classes'])
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data'].squeeze()
            gt = sample['gt_sem_seg']['data'].squeeze().to(pred)
            if isinstance(pred, torch.Tensor):
                pred, gt = pred.cpu().numpy(), gt.cpu().numpy()
            self.results.append(confusion_matrix(pred, gt, num))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        classes = list(self.dataset_meta['classes'])
        num = len(classes)
        hist = np.sum(results, axis=0) if results else np.zeros((num, num), np.int64)
        bg = self.bg_index % num
        fg = [c for c in range(num) if c != bg]
        scores = wsss_scores(hist, fg)
        metrics = OrderedDict()
        for key in ('mIoU', 'mDice', 'FwIoU', 'aAcc'):
            metrics[key] = round(scores[key] * 100, 2)
        if self.per_class:
            for c, name in enumerate(classes):
                metrics[f'IoU.{name}'] = round(float(scores['iou'][c]) * 100, 2)
                metrics[f'Dice.{name}'] = round(float(scores['dice'][c]) * 100, 2)
        note = '  (background: in the matrix, not in the means)'
        lines = [f'{name:>20s} IoU {scores["iou"][c] * 100:6.2f} '
                 f'Dice {scores["dice"][c] * 100:6.2f}' + (note if c == bg else '')
                 for c, name in enumerate(classes)]
        print_log('WSSS per-class results:\n' + '\n'.join(lines),
                  logger=MMLogger.get_current_instance())
        return metrics
