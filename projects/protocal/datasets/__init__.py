"""Point datasets, annotation readers and point transforms."""
from . import transforms  # noqa: F401
from .annotation_io import (ClassResolver, RawPoints, read_coco_points, read_csv_points,
                            read_geojson_points, read_points, write_csv_points)
from .her2 import Her2PointDataset
from .ocelot import OCELOTCellDataset
from .point_dataset import IMG_SUFFIXES, PointDataset, read_image_size

__all__ = [
    'PointDataset', 'OCELOTCellDataset', 'Her2PointDataset', 'ClassResolver', 'RawPoints',
    'read_csv_points', 'read_geojson_points', 'read_coco_points', 'read_points',
    'write_csv_points', 'read_image_size', 'IMG_SUFFIXES'
]
