from .point_detector import PointDetector

__all__ = ['PointDetector']
