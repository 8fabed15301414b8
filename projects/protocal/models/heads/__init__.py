"""Point heads: a generic multi-scale heatmap head and the papers' ViG decoder head."""
from .heatmap_point_head import BaseHeatmapPointHead, HeatmapPointHead
from .vig_point_head import ViGHeatmapPointHead

__all__ = ['BaseHeatmapPointHead', 'HeatmapPointHead', 'ViGHeatmapPointHead']
# LPD / plain CAM heads (issue 12, mmseg scope)
from .lpd_head import LearnablePrototypeCAMHead, LinearCAMHead  # noqa: E402

__all__ += ['LearnablePrototypeCAMHead', 'LinearCAMHead']
