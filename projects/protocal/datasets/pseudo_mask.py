"""Pseudo-mask dataset of MIL counting stage 3 (mmseg): ``img/<stem>.png`` + ``ann/<stem>.png``.

Written by :func:`protocal.apis.mil.build_pseudo_masks`; masks hold 0 (background) and 1 (cell),
so ``reduce_zero_label=False`` (the reference saved 0/255 and divided by 255 when loading).
"""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

__all__ = ['MILPseudoMaskDataset']


@DATASETS.register_module()
class MILPseudoMaskDataset(BaseSegDataset):
    """Images and binary pseudo masks of cells (classes ``background``, ``cell``)."""

    METAINFO = dict(classes=('background', 'cell'), palette=[[0, 0, 0], [255, 0, 0]])

    def __init__(self, data_prefix: dict = dict(img_path='img', seg_map_path='ann'),
                 **kwargs) -> None:
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        kwargs.setdefault('reduce_zero_label', False)
        super().__init__(data_prefix=data_prefix, **kwargs)
