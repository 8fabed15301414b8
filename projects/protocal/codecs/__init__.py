"""Codecs between point annotations and dense targets (``mmdet.registry.TASK_UTILS``)."""
from .point_heatmap import PointHeatmapCodec

__all__ = ['PointHeatmapCodec']
