"""Point geometry helpers shared by transforms, heads and visualisation."""
from .point_ops import (crop_points, flip_points, points_inside, rot90_points, scale_points,
                        unscale_points)

__all__ = [
    'crop_points', 'flip_points', 'points_inside', 'rot90_points', 'scale_points', 'unscale_points'
]
