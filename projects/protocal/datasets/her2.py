"""In-house HER2 IHC point dataset of the SEL / PCL papers (after conversion to CSV)."""
from typing import Any, Dict, Optional

from mmdet.registry import DATASETS
from .point_dataset import PointDataset

__all__ = ['Her2PointDataset']


@DATASETS.register_module()
class Her2PointDataset(PointDataset):
    """HER2 IHC breast patches with point labels, in the folder layout of the reference code.

    The reference trains on ``img_tumor/{split}/N.png`` with labels in
    ``ground_truth_tumor_<ratio>/{split}/N.h5`` (spec 1.1). protocal keeps the folder structure but
    stores points as CSV (``x,y,class`` and optionally ``annotated``)::

        <data_root>/
          img/{train,val,test}/1.png 2.png ...            # 1024x1024 RGB
          ground_truth/{train,val,test}/1.csv 2.csv ...   # x,y,class[,annotated]

    Build ``ground_truth`` from the annotation platform's JSON with
    ``tools/dataset_converters/her2_json_to_csv.py``, or from reference h5 files with
    ``tools/dataset_converters/h5_heatmaps_to_csv.py``. Frozen sparse subsets (an ``annotated``
    column, e.g. written by ``tools/dataset_converters/freeze_sparse_subset.py``) go into a sibling
    folder such as ``ground_truth_10pct`` selected with ``ann_dir``.

    Classes follow the PCL 3-channel model (spec section 0): ``('tumor', 'other')``; in the CSV the
    class column holds these names or the reference channel ids ``1 = tumor``, ``2 = other``. For
    the 2-channel SEL model use ``metainfo=dict(classes=('tumor', ))`` and
    ``class_map={'other': None, 2: None}``.

    Args:
        data_root: dataset root.
        split: sub-folder of ``img_dir`` and ``ann_dir`` (``'train'``, ``'val'``, ``'test'``).
        img_dir: image folder under ``data_root`` (the reference used ``img_tumor`` /
            ``img_2classes``).
        ann_dir: annotation folder under ``data_root``.
        **kwargs: see :class:`PointDataset`.
    """

    METAINFO: dict = dict(classes=('tumor', 'other'), palette=[(220, 20, 60), (30, 144, 255)])

    def __init__(self,
                 data_root: str = '',
                 split: str = 'train',
                 img_dir: str = 'img',
                 ann_dir: str = 'ground_truth',
                 class_map: Optional[Dict[Any, Optional[str]]] = None,
                 **kwargs) -> None:
        self.split = split
        kwargs.setdefault('data_prefix', dict(img=f'{img_dir}/{split}', ann=f'{ann_dir}/{split}'))
        kwargs.setdefault('ann_format', 'csv')
        super().__init__(data_root=data_root, class_map=class_map, **kwargs)

    def _layout_hint(self) -> str:
        return ('Expected the HER2 point layout:\n'
                '  <data_root>/\n'
                f'    {self._rel("img")}/1.png 2.png ...        (RGB patches)\n'
                f'    {self._rel("ann")}/1.csv 2.csv ...        (x,y,class[,annotated]; '
                'class = tumor/other or 1/2)\n'
                'Convert the annotation platform JSON with\n'
                '  python tools/dataset_converters/her2_json_to_csv.py RAW_JSON_DIR '
                '<data_root> --img-dir RAW_IMG_DIR --split train --class-map map.json\n'
                'or reference h5 files with tools/dataset_converters/h5_heatmaps_to_csv.py.\n'
                'See docs/datasets.md ("HER2").')
