"""High-level APIs: build a detector and predict, export predictions, classical baselines."""
from .classical import *  # noqa: F401,F403
from .export import *  # noqa: F401,F403
from .inference import (IMAGE_SUFFIXES, build_test_split_dataset, inference_point_detector,
                        init_point_detector, list_images, test_metric_cfg)

__all__ = [
    'IMAGE_SUFFIXES', 'build_test_split_dataset', 'inference_point_detector', 'init_point_detector',
    'list_images', 'test_metric_cfg'
]

from . import mil  # noqa: F401,E402  (MIL counting: pseudo masks, localisation)

# whole-slide inference (issue 14)
from .slide_inference import (DetectorTileModel, OutputFolderError,  # noqa: E402
                              infer_slide, infer_slides, write_cohort_summary,
                              write_qupath_geojson_stream)
from .slide_reader import (SLIDE_SUFFIXES, LevelChoice, MissingResolutionError,  # noqa: E402
                           SlideReadError, WholeSlide, choose_level, list_slides)
from .slide_tissue import detect_tissue, render_density_map  # noqa: E402

__all__ += [
    'DetectorTileModel', 'OutputFolderError', 'infer_slide', 'infer_slides',
    'write_cohort_summary', 'write_qupath_geojson_stream', 'SLIDE_SUFFIXES', 'LevelChoice',
    'MissingResolutionError', 'SlideReadError', 'WholeSlide', 'choose_level', 'list_slides',
    'detect_tissue', 'render_density_map'
]
