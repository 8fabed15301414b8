"""Visualizers registered in ``mmdet.registry.VISUALIZERS`` and plain drawing helpers."""
from .point_visualizer import (DEFAULT_PALETTE, FN_COLOR, FP_COLOR, TP_COLOR,
                               PointDetLocalVisualizer, draw_points_overlay, get_palette)

__all__ = [
    'PointDetLocalVisualizer', 'draw_points_overlay', 'get_palette', 'DEFAULT_PALETTE',
    'TP_COLOR', 'FP_COLOR', 'FN_COLOR'
]
