"""Codecs between point annotations and dense targets (registered in ``mmdet.registry.TASK_UTILS``)."""
from .point_heatmap import PointHeatmapCodec

__all__ = ['PointHeatmapCodec']
