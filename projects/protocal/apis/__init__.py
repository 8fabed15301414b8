"""High-level APIs: build a detector and predict, export predictions, classical baselines."""
from .classical import *  # noqa: F401,F403
from .export import *  # noqa: F401,F403
from .inference import (IMAGE_SUFFIXES, inference_point_detector, init_point_detector,
                        list_images)

__all__ = ['IMAGE_SUFFIXES', 'inference_point_detector', 'init_point_detector', 'list_images']
