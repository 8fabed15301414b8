"""Evaluation metrics registered in ``mmdet.registry.METRICS``."""
from .point_f1_metric import PointF1Metric

__all__ = ['PointF1Metric']
