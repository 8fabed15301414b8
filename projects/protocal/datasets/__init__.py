"""Point datasets, annotation readers and point transforms."""
from . import transforms  # noqa: F401
from .annotation_io import (ClassResolver, RawPoints, read_coco_points, read_csv_points,
                            read_geojson_points, read_points, write_csv_points)
from .her2 import Her2PointDataset
from .ocelot import OCELOTCellDataset
from .point_dataset import IMG_SUFFIXES, PointDataset, read_image_size
from .real_points import (CropToValidRegion, DSB2018PointDataset, EndoNukePointDataset,
                          TileFolderPointDataset, read_dsb_centroids, read_split_ids)

__all__ = [
    'PointDataset', 'OCELOTCellDataset', 'Her2PointDataset', 'ClassResolver', 'RawPoints',
    'read_csv_points', 'read_geojson_points', 'read_coco_points', 'read_points',
    'write_csv_points', 'read_image_size', 'IMG_SUFFIXES', 'EndoNukePointDataset',
    'DSB2018PointDataset', 'TileFolderPointDataset', 'CropToValidRegion', 'read_split_ids',
    'read_dsb_centroids'
]
# image-level-label WSSS datasets (mmseg scope, issue 12 / LPD)
from .wsss import (BCSS_WSSS_CLASSES, BCSS_WSSS_PALETTE, BCSSWSSSDataset,  # noqa: E402
                   ImageLabelCSVDataset, ImageLabelFolderDataset, parse_label_code,
                   read_split_file)

__all__ += [
    'BCSSWSSSDataset', 'ImageLabelCSVDataset', 'ImageLabelFolderDataset', 'parse_label_code',
    'read_split_file', 'BCSS_WSSS_CLASSES', 'BCSS_WSSS_PALETTE'
]

from .counting import (COUNT_CATEGORY_EDGES, COUNT_CATEGORY_NAMES,  # noqa: E402
                       NUM_COUNT_CATEGORIES, BaseCountDataset, CountFolderDataset,
                       PointCountDataset, category_range, check_count, count_to_category)
from .lysto import LYSTO_ORGANS, LystoH5Dataset, check_lysto_h5  # noqa: E402
from .pseudo_mask import MILPseudoMaskDataset  # noqa: E402

__all__ += [
    'COUNT_CATEGORY_EDGES', 'COUNT_CATEGORY_NAMES', 'NUM_COUNT_CATEGORIES', 'BaseCountDataset',
    'CountFolderDataset', 'PointCountDataset', 'category_range', 'check_count',
    'count_to_category', 'LYSTO_ORGANS', 'LystoH5Dataset', 'check_lysto_h5',
    'MILPseudoMaskDataset'
]

# sparse-label segmentation (issue 11, mmseg DATASETS)
from .sparse_seg import SparseSegDataset, read_split_file  # noqa: E402

__all__ += ['SparseSegDataset', 'read_split_file']
