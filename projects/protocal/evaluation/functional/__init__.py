"""Framework-free evaluation helpers shared by the metrics and the visualizers."""
from .point_matching import (MATCH_METHODS, MatchCounts, as_points, candidate_pairs,
                             count_matches, match_counts, match_points, match_points_by_class,
                             points_to_original, resolve_strict)

__all__ = [
    'MATCH_METHODS', 'MatchCounts', 'as_points', 'candidate_pairs', 'count_matches',
    'match_counts', 'match_points', 'match_points_by_class', 'points_to_original',
    'resolve_strict'
]

from .count_metrics import count_metrics, quadratic_weighted_kappa  # noqa: E402

__all__ += ['count_metrics', 'quadratic_weighted_kappa']

from .seg_distances import binary_seg_metrics, surface, surface_distances  # noqa: E402

__all__ += ['binary_seg_metrics', 'surface', 'surface_distances']
