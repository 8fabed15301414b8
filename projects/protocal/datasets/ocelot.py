"""OCELOT 2023 cell-detection dataset (Lunit; Ryu et al., 2023)."""
import os.path as osp
from typing import Any, Dict, Optional

from mmdet.registry import DATASETS
from .point_dataset import PointDataset

__all__ = ['OCELOTCellDataset']


@DATASETS.register_module()
class OCELOTCellDataset(PointDataset):
    """Cell patches of OCELOT 2023 (v1.0.1): 1024x1024 JPEGs at 0.2 um/px with point CSVs.

    Layout of the official release (only the ``cell`` folders are used)::

        <data_root>/
          images/{train,val,test}/cell/000.jpg ...
          annotations/{train,val,test}/cell/000.csv ...   # "x,y,label" rows, no header

    OCELOT label ids are ``1 = BC`` (background cell) and ``2 = TC`` (tumour cell). protocal orders
    the classes as in the SEL/PCL papers, tumour first, so heatmap channel 1 is "tumour" and
    channel 2 "other" (spec section 1.2, trap T4)::

        classes = ('tumor_cell', 'background_cell')   # TC -> label 0, BC -> label 1

    i.e. the default ``class_map`` is ``{2: 'tumor_cell', 1: 'background_cell'}``. Any other id in
    a CSV is an error. Empty CSVs (patches without cells) are valid.

    Args:
        data_root: root of the unpacked release (the folder holding ``images/`` and
            ``annotations/``).
        split: ``'train'``, ``'val'`` or ``'test'``; sets ``data_prefix`` unless one is given.
        mpp: microns per pixel of the cell patches (0.2).
        class_map: override the label remapping, e.g. ``{2: 'tumor_cell', 1: None}`` together with
            ``metainfo=dict(classes=('tumor_cell', ))`` for a tumour-only model.
        **kwargs: see :class:`PointDataset`.
    """

    METAINFO: dict = dict(
        classes=('tumor_cell', 'background_cell'), palette=[(220, 20, 60), (30, 144, 255)])
    SPLITS = ('train', 'val', 'test')
    DEFAULT_CLASS_MAP: Dict[Any, Optional[str]] = {2: 'tumor_cell', 1: 'background_cell'}

    def __init__(self,
                 data_root: str = '',
                 split: str = 'train',
                 mpp: Optional[float] = 0.2,
                 class_map: Optional[Dict[Any, Optional[str]]] = None,
                 **kwargs) -> None:
        if split not in self.SPLITS:
            raise ValueError(f'split must be one of {self.SPLITS}, got {split!r}')
        self.split = split
        kwargs.setdefault(
            'data_prefix', dict(img=f'images/{split}/cell', ann=f'annotations/{split}/cell'))
        kwargs.setdefault('ann_format', 'csv')
        kwargs.setdefault('class_id_base', None)
        super().__init__(
            data_root=data_root,
            mpp=mpp,
            class_map=dict(self.DEFAULT_CLASS_MAP) if class_map is None else class_map,
            **kwargs)

    def _layout_hint(self) -> str:
        return ('Expected the OCELOT 2023 layout (https://zenodo.org/records/8417503, v1.0.1):\n'
                '  <data_root>/\n'
                '    images/{train,val,test}/cell/000.jpg ...\n'
                '    annotations/{train,val,test}/cell/000.csv ...   ("x,y,label", 1=BC, 2=TC)\n'
                f'data_root given: {self.data_root!r}; looked for split {self.split!r} in '
                f'{osp.join(str(self.data_root), "images", self.split, "cell")!r}.\n'
                'See docs/datasets.md ("OCELOT 2023").')
