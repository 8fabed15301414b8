"""Datasets of images with full masks and/or sparse label maps (mmseg ``DATASETS``).

One sample per id; paths come from templates relative to ``data_root`` so any folder layout works:

* bundled DSB2018 H&E tiles: ``{id}/image.png`` + ``{id}/labels.png`` (uint16 instance map,
  ``mask_mode='instance'`` in :class:`LoadSparseSegAnnotations`);
* EBHI-Seg: ``{id}/image.png`` + ``{id}/mask.png`` with ``id = <Class>/<stem>``
  (``mask_mode='threshold'``, mask >= 128);
* converted ProCNS h5 files: ``{id}/image.png``, ``{id}/mask.png``, ``{id}/sparse_<type>.png``;
* frozen sparse labels: ``sparse_template`` (e.g. ``'frozen/point/{id}.png'``).

The split file (``ann_file``) lists one id per line (``#`` comments allowed), optionally followed by
a TAB and a volume id for per-volume metrics. Without ``ann_file`` every file matching
``img_template`` under ``data_root`` is a sample (sorted).
"""
import os
import os.path as osp
from typing import List, Optional

import mmengine
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

__all__ = ['SparseSegDataset', 'read_split_file']


def read_split_file(path: str, split: Optional[str] = None) -> List[List[str]]:
    """Rows of a split file: ``[id]`` or ``[id, volume_id]``.

    Text files: one sample per line (the id may contain spaces), optionally a TAB and a volume id;
    blank lines and ``#`` comments skipped. JSON files (as written
    by ``tools/dataset_converters/make_real_splits.py``): the list under key ``split``.
    """
    if path.endswith('.json'):
        import json
        with open(path) as f:
            content = json.load(f)
        if split is None or split not in content:
            raise KeyError(f'{path}: give split= one of '
                           f"{sorted(k for k in content if k != 'meta')}, got {split!r}")
        rows = [[str(i)] for i in content[split]]
        if not rows:
            raise ValueError(f'{path}: split {split!r} lists no sample')
        return rows
    rows = []
    for line in mmengine.list_from_file(path):
        line = line.split('#', 1)[0].strip()
        if line:  # ids may contain spaces (EBHI-Seg 'High-grade IN/...'): only a TAB separates
            rows.append([part.strip() for part in line.split('\t')])
    if not rows:
        raise ValueError(f'{path}: split file lists no sample')
    return rows


@DATASETS.register_module()
class SparseSegDataset(BaseSegDataset):
    """Images + full masks (for evaluation or label simulation) and/or sparse label maps.

    Args:
        ann_file: split file (relative to ``data_root``), or ``''`` for every image found.
        img_template: image path of a sample, ``{id}`` replaced by its id.
        mask_template: full-mask path (``None``: no full masks, e.g. real sparse annotation).
        sparse_template: sparse-label path (``None``: derive labels from the full mask).
        split: key of the split in a JSON ``ann_file`` (``'train'``, ``'val'``, ``'test'``).
        metainfo: ``classes`` (background first) and ``palette``.
        **kwargs: :class:`mmseg.datasets.BaseSegDataset` arguments (``data_root``, ``pipeline``,
            ``test_mode``, ``ignore_index``, ...).
    """

    METAINFO = dict(classes=('background', 'foreground'), palette=[[0, 0, 0], [255, 64, 64]])

    def __init__(self,
                 ann_file: str = '',
                 img_template: str = '{id}/image.png',
                 mask_template: Optional[str] = '{id}/mask.png',
                 sparse_template: Optional[str] = None,
                 split: Optional[str] = None,
                 **kwargs) -> None:
        for name, template in (('img_template', img_template), ('mask_template', mask_template),
                               ('sparse_template', sparse_template)):
            if template is not None and '{id}' not in template:
                raise ValueError(f'{name} must contain "{{id}}", got {template!r}')
        self.img_template = img_template
        self.mask_template = mask_template
        self.sparse_template = sparse_template
        self.split = split
        super().__init__(ann_file=ann_file, **kwargs)

    @classmethod
    def get_label_map(cls, new_classes=None):
        """No label remapping by class names: ``metainfo['classes']`` just names the classes; raw
        mask values are mapped to classes by :class:`LoadSparseSegAnnotations`."""
        return None

    def _root(self) -> str:
        return self.data_root or ''

    def _discover_ids(self) -> List[List[str]]:
        prefix, suffix = self.img_template.split('{id}', 1)
        base = osp.join(self._root(), prefix)
        found = []
        for dirpath, _, files in os.walk(base):
            for name in files:
                rel = osp.relpath(osp.join(dirpath, name), base).replace(os.sep, '/')
                if rel.endswith(suffix) and len(rel) > len(suffix):
                    found.append([rel[:len(rel) - len(suffix)]])
        if not found:
            raise FileNotFoundError(f'no image matching {self.img_template!r} under {base!r}')
        return sorted(found)

    def load_data_list(self) -> List[dict]:
        rows = read_split_file(self.ann_file, self.split) if self.ann_file else self._discover_ids()
        root = self._root()
        data_list = []
        for row in rows:
            sample_id = row[0]
            img_path = osp.join(root, self.img_template.format(id=sample_id))
            if not osp.isfile(img_path):
                raise FileNotFoundError(f'{self.ann_file or root}: image of sample {sample_id!r} '
                                        f'not found: {img_path}')
            info = dict(img_path=img_path, sample_id=sample_id, label_map=self.label_map,
                        reduce_zero_label=self.reduce_zero_label, seg_fields=[])
            if self.mask_template is not None:
                mask_path = osp.join(root, self.mask_template.format(id=sample_id))
                if not osp.isfile(mask_path):
                    raise FileNotFoundError(f'mask of sample {sample_id!r} not found: {mask_path}')
                info['seg_map_path'] = mask_path
            if self.sparse_template is not None:
                sparse_path = osp.join(root, self.sparse_template.format(id=sample_id))
                if not osp.isfile(sparse_path):
                    raise FileNotFoundError(f'sparse labels of sample {sample_id!r} not found: '
                                            f'{sparse_path}')
                info['sparse_map_path'] = sparse_path
            if len(row) > 1:
                info['volume_id'] = row[1]
            data_list.append(info)
        return data_list
