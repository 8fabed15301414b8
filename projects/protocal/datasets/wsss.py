"""Datasets for weakly supervised semantic segmentation from image-level labels (mmseg scope).

Three ways to bring image-level labels, one convention for everything downstream:

* ``metainfo['classes']`` lists the foreground classes followed by **one background class, last**
  (BCSS-WSSS: ``TUM, STR, LYM, NEC, BACK``; background index = number of foreground classes).
* every ``data_info`` carries ``gt_cls_label`` (int64 ``(C,)`` multi-hot over the foreground
  classes) when the label is known from the file name / CSV / folder, ``bg_index`` and
  ``num_fg_classes``; segmentation maps (when any) are in ``seg_map_path`` and are read by
  :class:`~protocal.datasets.transforms.LoadWSSSAnnotations`, which validates their values.

Datasets:

* :class:`BCSSWSSSDataset`: the BCSS-WSSS benchmark (Han et al., WSSS-Tissue) exactly as LPD / PBIP
  read it: label code ``[abcd]`` in the training file names, palette masks ``0..4`` for val/test,
  with the ``val`` / ``valid`` folder-name trap handled.
* :class:`ImageLabelCSVDataset`: a CSV ``image,labels[,mask]``.
* :class:`ImageLabelFolderDataset`: the class is the folder an image sits in (EBHI-Seg layout
  ``<root>/<Class>/<stem>/image.png`` with ``mask.png`` beside it, or ``<root>/<Class>/*.png``).
"""
from __future__ import annotations

import csv
import glob
import os
import os.path as osp
import re
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

__all__ = [
    'parse_label_code', 'BCSSWSSSDataset', 'ImageLabelCSVDataset', 'ImageLabelFolderDataset',
    'read_split_file', 'BCSS_WSSS_CLASSES', 'BCSS_WSSS_PALETTE'
]

BCSS_WSSS_CLASSES = ('TUM', 'STR', 'LYM', 'NEC', 'BACK')
# datasets/palette.npy of the LPD / PBIP code
BCSS_WSSS_PALETTE = [[205, 51, 51], [0, 255, 0], [65, 105, 225], [255, 165, 0], [255, 255, 255]]

_CODE = re.compile(r'\[([^\[\]]*)\]')


def parse_label_code(path: str, num_classes: int) -> np.ndarray:
    """Multi-hot image label from a file name ``..._[1101].png`` (BCSS-WSSS convention).

    Only the **file name** is parsed (the reference split the full path on ``[`` and broke on a
    ``[`` in a directory name). The code is the last ``[...]`` group of the name; its characters are
    0/1 digits, optionally separated by spaces (LUAD-HistoSeg writes ``[1 0 0 1]``).

    Raises:
        ValueError: naming the file, when there is no code, a character is not 0/1, or the code
            does not have ``num_classes`` digits.
    """
    name = osp.basename(path)
    groups = _CODE.findall(name)
    if not groups:
        example = 'patient_x_y[' + '1' * num_classes + '].png'
        raise ValueError(f'{path}: no image-level label code "[...]" in the file name (expected '
                         f'{num_classes} digits 0/1 in brackets, e.g. "{example}")')
    code = groups[-1].replace(' ', '')
    if not code or any(ch not in '01' for ch in code):
        raise ValueError(f'{path}: label code [{groups[-1]}] does not parse: every character must '
                         f'be 0 or 1')
    if len(code) != num_classes:
        raise ValueError(f'{path}: label code [{groups[-1]}] has {len(code)} digits, expected '
                         f'{num_classes} (one per class)')
    return np.array([int(ch) for ch in code], dtype=np.int64)


def read_split_file(path: str) -> List[str]:
    """Non-empty, non-comment lines of a split file (one relative sample path per line)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'split file not found: {path!r}')
    with open(path) as f:
        lines = [ln.strip() for ln in f]
    return [ln for ln in lines if ln and not ln.startswith('#')]


class _WSSSMixin:
    """Shared helpers: background convention, empty-label policy."""

    def _wsss_setup(self, on_empty_label: str) -> None:
        if on_empty_label not in ('error', 'skip'):
            raise ValueError(f"on_empty_label must be 'error' or 'skip', got {on_empty_label!r}")
        self.on_empty_label = on_empty_label
        self.num_skipped_empty = 0

    @property
    def num_fg_classes(self) -> int:
        return len(self.metainfo['classes']) - 1

    def _base_info(self) -> dict:
        return dict(label_map=self.label_map, reduce_zero_label=False, seg_fields=[],
                    bg_index=self.num_fg_classes, num_fg_classes=self.num_fg_classes)

    def _check_empty(self, label: np.ndarray, path: str) -> bool:
        """True to keep the sample; raises / counts for a label with no class."""
        if label.any():
            return True
        if self.on_empty_label == 'error':
            raise ValueError(f'{path}: the image-level label has no class (all zeros); every '
                             f'training patch needs at least one class. Set '
                             f"on_empty_label='skip' to drop such patches with a warning.")
        self.num_skipped_empty += 1
        return False

    def _warn_skipped(self) -> None:
        if self.num_skipped_empty:
            warnings.warn(f'{type(self).__name__}: skipped {self.num_skipped_empty} image(s) '
                          f'whose image-level label has no class')


@DATASETS.register_module()
class BCSSWSSSDataset(_WSSSMixin, BaseSegDataset):
    """BCSS-WSSS (Han et al. 2022), as read by the LPD / PBIP code.

    Layout (``data_root``)::

        train/*.png                      patientID_x_y[abcd].png, abcd = TUM STR LYM NEC (0/1)
        val/img/*.png  val/mask/*.png    (the release's name; the LPD code expects valid/)
        valid/img/*.png valid/mask/*.png (either name works, for split='val' or 'valid')
        test/img/*.png test/mask/*.png   masks: palette PNG, one index per pixel 0..4

    Mask values ``0=TUM, 1=STR, 2=LYM, 3=NEC, 4=BACK`` (background / white / other tissue);
    background stays a class of the evaluation (see :class:`WSSSIoUMetric`). On val/test the
    image-level label is derived from the mask (classes 0-3 present) by
    :class:`LoadWSSSAnnotations`, as in the reference (note: that is ground-truth leakage into the
    CAM gating, standard for this benchmark).

    Args:
        split: ``'train'``, ``'val'`` / ``'valid'`` (either folder name is accepted on disk) or
            ``'test'``.
        on_empty_label: ``'error'`` (default) or ``'skip'`` for training names coded ``[0000]``.
    """

    METAINFO = dict(classes=BCSS_WSSS_CLASSES, palette=BCSS_WSSS_PALETTE)

    def __init__(self, split: str = 'train', on_empty_label: str = 'error', **kwargs) -> None:
        if split not in ('train', 'val', 'valid', 'test'):
            raise ValueError(f"split must be 'train', 'val', 'valid' or 'test', got {split!r}")
        self.split = split
        self._wsss_setup(on_empty_label)
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        super().__init__(**kwargs)

    LAYOUT = ('Expected BCSS-WSSS layout under data_root:\n'
              '  train/<patientID>_<x>_<y>[abcd].png   (abcd = TUM STR LYM NEC, 0/1)\n'
              '  val/img/*.png + val/mask/*.png        (or valid/img, valid/mask)\n'
              '  test/img/*.png + test/mask/*.png')

    def _split_dir(self) -> str:
        root = self.data_root or ''
        if self.split in ('train', 'test'):
            names = [self.split]
        else:
            names = ['val', 'valid']
        found = [n for n in names if osp.isdir(osp.join(root, n))]
        if len(found) > 1:
            raise ValueError(f'{root}: both val/ and valid/ exist; keep one validation folder '
                             f'(the WSSS-Tissue release calls it val/, the LPD code valid/)')
        if not found:
            raise FileNotFoundError(f'{root}: no {" or ".join(n + "/" for n in names)} folder '
                                    f'for split {self.split!r}. {self.LAYOUT}')
        return osp.join(root, found[0])

    def load_data_list(self) -> List[dict]:
        split_dir = self._split_dir()
        suffix = self.img_suffix
        data_list = []
        if self.split == 'train':
            names = sorted(f for f in os.listdir(split_dir) if f.endswith(suffix))
            if not names:
                raise FileNotFoundError(f'{split_dir}: no *{suffix} training patches. '
                                        f'{self.LAYOUT}')
            for name in names:
                path = osp.join(split_dir, name)
                label = parse_label_code(path, self.num_fg_classes)
                if not self._check_empty(label, path):
                    continue
                data_list.append(dict(img_path=path, gt_cls_label=label, **self._base_info()))
            self._warn_skipped()
            return data_list
        img_dir, mask_dir = osp.join(split_dir, 'img'), osp.join(split_dir, 'mask')
        for d in (img_dir, mask_dir):
            if not osp.isdir(d):
                raise FileNotFoundError(f'{d} does not exist. {self.LAYOUT}')
        imgs = sorted(f for f in os.listdir(img_dir) if f.endswith(suffix))
        masks = set(f for f in os.listdir(mask_dir) if f.endswith(self.seg_map_suffix))
        if not imgs:
            raise FileNotFoundError(f'{img_dir}: no *{suffix} images. {self.LAYOUT}')
        stems = [f[:-len(suffix)] for f in imgs]
        missing = [s + self.seg_map_suffix for s in stems if s + self.seg_map_suffix not in masks]
        if missing:
            raise FileNotFoundError(f'{mask_dir}: {len(missing)} image(s) have no mask with the '
                                    f'same name, e.g. {missing[:3]}')
        for img, stem in zip(imgs, stems):
            data_list.append(
                dict(img_path=osp.join(img_dir, img),
                     seg_map_path=osp.join(mask_dir, stem + self.seg_map_suffix),
                     **self._base_info()))
        return data_list


def _resolve_labels(text: str, classes: Sequence[str], where: str) -> np.ndarray:
    """``'TUM;LYM'`` (names, ``;`` or ``|`` separated) or a 0/1 code ``'1010'`` -> multi-hot."""
    text = text.strip()
    label = np.zeros(len(classes), dtype=np.int64)
    if text and re.fullmatch(r'[01 ]+', text) and not set(classes) & {text}:
        code = text.replace(' ', '')
        if len(code) != len(classes):
            raise ValueError(f'{where}: label code {text!r} has {len(code)} digits, expected '
                             f'{len(classes)} ({", ".join(classes)})')
        return np.array([int(ch) for ch in code], dtype=np.int64)
    for name in filter(None, (t.strip() for t in re.split(r'[;|]', text))):
        if name not in classes:
            raise ValueError(f'{where}: unknown class {name!r}; classes are {list(classes)}')
        label[classes.index(name)] = 1
    return label


@DATASETS.register_module()
class ImageLabelCSVDataset(_WSSSMixin, BaseSegDataset):
    """Image-level labels from a CSV file (``ann_file``, relative to ``data_root``).

    Columns: ``image`` (path relative to ``data_root``), ``labels`` (class names separated by ``;``
    or ``|``, or a 0/1 code with one digit per foreground class), optional ``mask`` (relative path
    of a mask; read per ``LoadWSSSAnnotations.mask_mode``). ``metainfo['classes']`` must list the
    foreground classes followed by the background class.
    """

    def __init__(self, on_empty_label: str = 'error', **kwargs) -> None:
        self._wsss_setup(on_empty_label)
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        classes = list(self.metainfo['classes'])[:-1]
        path = self.ann_file
        if not osp.isfile(path):
            raise FileNotFoundError(f'label CSV not found: {path!r}. Expected columns '
                                    f'image,labels[,mask]')
        root = self.data_root or ''
        data_list = []
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            for col in ('image', 'labels'):
                if col not in (reader.fieldnames or []):
                    raise ValueError(f'{path}: missing column {col!r} (found {reader.fieldnames})')
            for row_no, row in enumerate(reader, start=2):
                where = f'{path} line {row_no}'
                label = _resolve_labels(row['labels'] or '', classes, where)
                img_path = osp.join(root, row['image'])
                if not self._check_empty(label, f'{where} ({row["image"]})'):
                    continue
                info = dict(img_path=img_path, gt_cls_label=label, **self._base_info())
                if row.get('mask'):
                    info['seg_map_path'] = osp.join(root, row['mask'])
                data_list.append(info)
        self._warn_skipped()
        if not data_list:
            raise ValueError(f'{path}: no labelled images')
        return data_list


@DATASETS.register_module()
class ImageLabelFolderDataset(_WSSSMixin, BaseSegDataset):
    """Image-level label = the class folder an image sits in (one class per image).

    Layouts (``data_root``)::

        <Class>/<stem>/image.png  (+ <Class>/<stem>/mask.png)   img_pattern='*/*/image.png'
        <Class>/<name>.png                                     img_pattern='*/*.png'

    The class is the first path component below ``data_root``; folder names must be in
    ``metainfo['classes']`` (foreground classes, then the background class, last).

    Args:
        img_pattern: glob (relative to ``data_root``) of the images.
        split_file: optional split file (path relative to the working directory, not to
            ``data_root``), one sample per line: the image's path relative to ``data_root`` or its
            folder (``Polyp/GT2012118-1-400-001``); only these are used, in this order.
        mask_name: file name of the mask beside each image (``'mask.png'`` for EBHI-Seg), or None.
        seg_map_root: masks elsewhere (e.g. pseudo masks): ``<seg_map_root>/<image path relative
            to data_root, suffix replaced by seg_map_suffix>``. Overrides ``mask_name``.
    """

    def __init__(self,
                 img_pattern: str = '*/*/image.png',
                 mask_name: Optional[str] = 'mask.png',
                 seg_map_root: Optional[str] = None,
                 split_file: Optional[str] = None,
                 on_empty_label: str = 'error',
                 **kwargs) -> None:
        self.img_pattern = img_pattern
        self.split_file = split_file
        self.mask_name = mask_name
        self.seg_map_root = seg_map_root
        self._wsss_setup(on_empty_label)
        kwargs.setdefault('seg_map_suffix', '.png')
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_root or ''
        classes = list(self.metainfo['classes'])[:-1]
        if not osp.isdir(root):
            raise FileNotFoundError(f'data_root {root!r} does not exist. Expected layout: '
                                    f'<data_root>/<Class>/... matching {self.img_pattern!r}')
        paths = sorted(glob.glob(osp.join(glob.escape(root), self.img_pattern)))
        rels = [osp.relpath(p, root) for p in paths]
        if self.split_file:
            wanted = read_split_file(self.split_file)
            by_key: Dict[str, str] = {}
            for rel in rels:
                by_key[rel] = rel
                by_key.setdefault(osp.dirname(rel), rel)
            missing = [w for w in wanted if w.rstrip('/') not in by_key]
            if missing:
                raise FileNotFoundError(f'{self.split_file}: {len(missing)} listed sample(s) not '
                                        f'found under {root!r} with {self.img_pattern!r}, e.g. '
                                        f'{missing[:3]}')
            rels = [by_key[w.rstrip('/')] for w in wanted]
        if not rels:
            raise FileNotFoundError(f'no image matches {self.img_pattern!r} under {root!r}. '
                                    f'Expected layout: <data_root>/<Class>/<stem>/image.png')
        data_list = []
        for rel in rels:
            cls_name = rel.split(os.sep)[0]
            if cls_name not in classes:
                raise ValueError(f'{osp.join(root, rel)}: folder {cls_name!r} is not a class of '
                                 f'this dataset ({classes})')
            label = np.zeros(len(classes), dtype=np.int64)
            label[classes.index(cls_name)] = 1
            info = dict(img_path=osp.join(root, rel), gt_cls_label=label, **self._base_info())
            if self.seg_map_root is not None:
                info['seg_map_path'] = osp.join(self.seg_map_root,
                                                osp.splitext(rel)[0] + self.seg_map_suffix)
            elif self.mask_name:
                mask = osp.join(root, osp.dirname(rel), self.mask_name)
                if osp.isfile(mask):
                    info['seg_map_path'] = mask
            data_list.append(info)
        return data_list
