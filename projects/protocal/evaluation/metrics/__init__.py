"""Evaluation metrics registered in ``mmdet.registry.METRICS``."""
from .point_f1_metric import PointF1Metric

__all__ = ['PointF1Metric']
# WSSS benchmark metric (issue 12 / LPD, mmseg METRICS)
from .wsss_iou_metric import WSSSIoUMetric, confusion_matrix, wsss_scores  # noqa: E402

__all__ += ['WSSSIoUMetric', 'confusion_matrix', 'wsss_scores']

from .count_metric import CountKappaMetric  # noqa: E402

__all__ += ['CountKappaMetric']

from .seg_dice_hd_metric import DiceHD95Metric  # noqa: E402  (issue 11, mmseg METRICS)

__all__ += ['DiceHD95Metric']
