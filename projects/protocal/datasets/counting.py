"""Counting datasets for MIL counting (issue 13): images + per-image cell counts.

Three sources give the same ``data_info`` (so every stage of ``configs/mil`` takes any of them):

* :class:`~protocal.datasets.LystoH5Dataset` (``lysto.py``) -- LYSTO as distributed (HDF5);
* :class:`CountFolderDataset` -- a folder of images plus one CSV ``filename,count``;
* :class:`PointCountDataset` -- any project point dataset (``PointDataset``,
  ``EndoNukePointDataset``, ``DSB2018PointDataset``, ...): the count of an image is its number of
  points, optionally of some classes only. The points stay in the ``data_info`` (``gt_points``) so
  that localisation can be scored against them; training never reads them.

``data_info`` keys: ``img_id``, ``img_path`` (or ``h5_path`` + ``h5_index``), ``gt_count`` (int),
``gt_count_cls`` (LYSTO category 0..6), optional ``organ``, ``gt_points`` (float32 ``(N, 2)``),
``expected_hw`` (checked by :class:`~protocal.datasets.transforms.LoadCountImage`).

Count categories (LYSTO scoring, ``dataset.categorize`` of the reference): 7 bins
``{0}, [1, 5], [6, 10], [11, 20], [21, 50], [51, 200], >= 201``.
"""
import csv
import numbers
import os
import os.path as osp
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from mmseg.registry import DATASETS

__all__ = [
    'COUNT_CATEGORY_EDGES', 'COUNT_CATEGORY_NAMES', 'NUM_COUNT_CATEGORIES', 'count_to_category',
    'category_range', 'check_count', 'BaseCountDataset', 'CountFolderDataset',
    'PointCountDataset'
]

#: lower bound of every category (category i = [edge_i, edge_{i+1} - 1]; the last is open)
COUNT_CATEGORY_EDGES: Tuple[int, ...] = (0, 1, 6, 11, 21, 51, 201)
COUNT_CATEGORY_NAMES: Tuple[str, ...] = ('0', '1-5', '6-10', '11-20', '21-50', '51-200', '>200')
NUM_COUNT_CATEGORIES = len(COUNT_CATEGORY_EDGES)
#: upper bound used for the open last category (as the reference's ``de_categorize``)
_OPEN_MAX = 100000


def count_to_category(count) -> Any:
    """LYSTO count category (0..6) of a count, or of an array of counts.

    Non-integer counts (predicted, e.g. a regression output) are rounded to the nearest integer
    first (half away from zero would differ only at .5; ``np.rint`` rounds half to even, the
    behaviour of Python's ``round`` used by the reference). Negative counts raise ``ValueError``.
    """
    arr = np.asarray(count, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f'counts must be finite, got {count!r}')
    arr = np.rint(arr)
    if (arr < 0).any():
        raise ValueError(f'counts must be >= 0, got {count!r}')
    cats = np.searchsorted(np.asarray(COUNT_CATEGORY_EDGES), arr, side='right') - 1
    if cats.ndim == 0:
        return int(cats)
    return cats.astype(np.int64)


def category_range(category: int) -> Tuple[int, int]:
    """``(min, max)`` count of a category (``de_categorize``; the open bin ends at 100000)."""
    if not 0 <= int(category) < NUM_COUNT_CATEGORIES:
        raise ValueError(f'category must be in [0, {NUM_COUNT_CATEGORIES - 1}], got {category}')
    lo = COUNT_CATEGORY_EDGES[category]
    hi = (COUNT_CATEGORY_EDGES[category + 1] - 1
          if category + 1 < NUM_COUNT_CATEGORIES else _OPEN_MAX)
    return lo, hi


def check_count(value: Any, where: str) -> int:
    """A count as a non-negative ``int``; ``ValueError`` naming ``where`` otherwise.

    Accepts ints, integral floats (``3.0``) and their string forms. Rejects missing values
    (``None``, ``''``, NaN), non-integers (``2.5``), negatives, booleans and other types.
    """
    if value is None or isinstance(value, (bool, np.bool_)):
        raise ValueError(f'{where}: missing count (got {value!r}); every image needs an integer '
                         'count >= 0')
    if isinstance(value, (bytes, str)):
        text = value.decode() if isinstance(value, bytes) else value
        text = text.strip()
        if text == '':
            raise ValueError(f'{where}: missing count (empty field); every image needs an '
                             'integer count >= 0')
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f'{where}: count {text!r} is not a number') from None
    if not isinstance(value, numbers.Number):
        raise ValueError(f'{where}: count must be a number, got {type(value).__name__}')
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f'{where}: missing count (got {value!r})')
    if v != np.floor(v):
        raise ValueError(f'{where}: count {value!r} is not an integer')
    if v < 0:
        raise ValueError(f'{where}: count {value!r} is negative')
    return int(v)


class BaseCountDataset(BaseDataset):
    """Common part of the counting datasets (mmseg ``DATASETS``).

    Args:
        img_size: ``(height, width)`` every image must have (``None``: any size). Checked when
            the dataset is built (image headers / the HDF5 shape) and again when an image is
            loaded; a mismatch raises ``ValueError`` naming the file or index.
        split_every: with ``split='train'`` / ``'val'``, image ``i`` (0-based, in file order)
            goes to val iff ``(i + 1) % split_every == 0`` (the reference's 10-fold rule,
            ``split_every=10``). ``None`` or ``split=None``: every image.
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments (``pipeline``, ``test_mode``,
            ``indices``, ...).
    """

    METAINFO: dict = dict(classes=COUNT_CATEGORY_NAMES)

    def __init__(self,
                 img_size: Optional[Sequence[int]] = None,
                 split: Optional[str] = None,
                 split_every: Optional[int] = 10,
                 **kwargs) -> None:
        if img_size is not None:
            img_size = tuple(int(v) for v in img_size)
            if len(img_size) != 2 or min(img_size) < 1:
                raise ValueError(f'img_size must be (height, width), got {img_size}')
        if split not in (None, 'train', 'val', 'all'):
            raise ValueError(f"split must be None, 'all', 'train' or 'val', got {split!r}")
        self.img_size = img_size
        self.split = None if split == 'all' else split
        self.split_every = split_every
        kwargs.setdefault('serialize_data', False)
        super().__init__(**kwargs)

    def _fold_keep(self, i: int) -> bool:
        if self.split is None or not self.split_every:
            return True
        is_val = (i + 1) % int(self.split_every) == 0
        return is_val if self.split == 'val' else not is_val

    @staticmethod
    def _info(img_id: Any, count: int, **extra) -> dict:
        info = dict(img_id=img_id, gt_count=int(count), gt_count_cls=count_to_category(count))
        info.update(extra)
        return info

    def _check_image_header(self, path: str) -> None:
        """Check channels and size of one image file from its header (PIL)."""
        from PIL import Image
        try:
            with Image.open(path) as im:
                mode, (w, h) = im.mode, im.size
        except Exception as e:  # noqa: BLE001
            raise ValueError(f'{path}: cannot be read as an image ({e})') from None
        if mode not in ('RGB', 'RGBA', 'P'):
            raise ValueError(f'{path}: expected an RGB image, got PIL mode {mode!r} '
                             '(grayscale / 16-bit images are not colour stains)')
        if self.img_size is not None and (h, w) != self.img_size:
            raise ValueError(f'{path}: image is {h}x{w} (HxW) but the dataset expects '
                             f'{self.img_size[0]}x{self.img_size[1]} (img_size)')

    def counts(self) -> np.ndarray:
        """Ground-truth counts of all images, in dataset order."""
        return np.asarray([self.get_data_info(i)['gt_count'] for i in range(len(self))],
                          np.int64)

    def get_cat_ids(self, idx: int) -> List[int]:
        return [int(self.get_data_info(idx)['gt_count_cls'])]


@DATASETS.register_module()
class CountFolderDataset(BaseCountDataset):
    """A folder of images with one CSV of counts (``filename,count``; extra columns kept).

    Layout::

        <data_root>/<img_dir>/*.png|jpg|tif     <data_root>/<ann_file>  (header: filename,count)

    ``filename`` is relative to ``img_dir``. Optional columns ``organ`` and ``split`` are kept
    (``split`` column values select rows when ``split`` is given and ``split_every=None``).

    Bad input: a CSV row without count / with a negative or non-integer count -> ``ValueError``
    naming the CSV, the row and the file; an image in the folder without a row, or a row without
    image -> ``ValueError`` listing them; wrong channels / size -> ``ValueError`` naming the file.
    """

    def __init__(self, ann_file: str = 'counts.csv', img_dir: str = 'images',
                 check_images: bool = True, **kwargs) -> None:
        self.img_dir = img_dir
        self.check_images = check_images
        super().__init__(ann_file=ann_file, **kwargs)

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'{type(self).__name__}: count CSV {self.ann_file!r} not '
                                    'found. Expected <data_root>/<ann_file> with header '
                                    '"filename,count" and <data_root>/<img_dir>/<filename>.')
        img_dir = osp.join(self.data_root, self.img_dir) if self.data_root else self.img_dir
        if not osp.isdir(img_dir):
            raise FileNotFoundError(f'{type(self).__name__}: image folder {img_dir!r} not found')
        with open(self.ann_file, newline='') as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
            if 'filename' not in fields or 'count' not in fields:
                raise ValueError(f'{self.ann_file}: header must contain "filename" and "count", '
                                 f'got {reader.fieldnames}')
            rows = [{k.strip().lower(): v for k, v in r.items() if k is not None} for r in reader]
        on_disk = {n for n in os.listdir(img_dir) if not n.startswith('.') and
                   n.lower().endswith(('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp'))}
        listed = [r['filename'].strip() for r in rows]
        missing_img = [n for n in listed if not osp.isfile(osp.join(img_dir, n))]
        unlisted = sorted(on_disk - set(listed))
        if missing_img or unlisted:
            msg = [f'{type(self).__name__}: {self.ann_file} and {img_dir} do not pair up.']
            if unlisted:
                msg.append(f'  {len(unlisted)} image(s) without a count row (missing count): '
                           f'{", ".join(unlisted[:20])}')
            if missing_img:
                msg.append(f'  {len(missing_img)} row(s) without image: '
                           f'{", ".join(missing_img[:20])}')
            raise ValueError('\n'.join(msg))
        data_list = []
        for i, row in enumerate(rows):
            name = row['filename'].strip()
            where = f'{self.ann_file}, row {i + 2} ({name})'
            count = check_count(row.get('count'), where)
            if not self._fold_keep(i):
                continue
            path = osp.join(img_dir, name)
            if self.check_images:
                self._check_image_header(path)
            extra = dict(img_path=path)
            if row.get('organ'):
                extra['organ'] = row['organ'].strip()
            if self.img_size is not None:
                extra['expected_hw'] = self.img_size
            data_list.append(self._info(osp.splitext(name)[0], count, **extra))
        print_log(f'{type(self).__name__}: {len(data_list)} images from {self.ann_file}',
                  logger='current')
        return data_list


@DATASETS.register_module()
class PointCountDataset(BaseCountDataset):
    """Counts derived from a project point dataset: every point dataset is a counting dataset.

    Args:
        points_dataset: config of the point dataset (built with ``mmdet.registry.DATASETS``,
            e.g. ``dict(type='EndoNukePointDataset', data_root=..., split='train')``); its
            ``pipeline`` is ignored.
        count_classes: class names whose points are counted (``None``: all points).
        keep_points: keep ``gt_points`` (of the counted classes) in ``data_info`` for scoring
            localisation (never used for training).
        mask_invalid_rows: images with a ``valid_hw`` entry (e.g. EndoNuke tiles with black
            transparent rows) keep it in ``data_info`` so later stages can mask the rows out.
    """

    def __init__(self,
                 points_dataset: dict,
                 count_classes: Optional[Sequence[str]] = None,
                 keep_points: bool = True,
                 check_images: bool = True,
                 **kwargs) -> None:
        if not isinstance(points_dataset, dict) or 'type' not in points_dataset:
            raise ValueError('points_dataset must be a dataset config dict with a "type"')
        self.points_dataset_cfg = dict(points_dataset)
        self.count_classes = None if count_classes is None else tuple(count_classes)
        self.keep_points = keep_points
        self.check_images = check_images
        kwargs.setdefault('split_every', None)
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        import protocal.datasets  # noqa: F401  (registers the point datasets)
        from mmdet.registry import DATASETS as DET_DATASETS
        cfg = dict(self.points_dataset_cfg)
        cfg['pipeline'] = []
        cfg.setdefault('test_mode', True)
        if '.' not in str(cfg['type']):
            cfg.setdefault('_scope_', 'mmdet')  # point datasets live in the mmdet registry
        points_ds = DET_DATASETS.build(cfg)
        classes = tuple(points_ds.metainfo.get('classes') or ())
        if self.count_classes is not None:
            unknown = [c for c in self.count_classes if c not in classes]
            if unknown:
                raise ValueError(f'{type(self).__name__}: count_classes {unknown} are not classes '
                                 f'of {cfg["type"]} {classes}')
            wanted = np.asarray([classes.index(c) for c in self.count_classes], np.int64)
        self._source_classes = classes
        data_list = []
        for i in range(len(points_ds)):
            src = points_ds.get_data_info(i)
            labels = np.asarray(src.get('gt_points_labels', np.zeros(0)), np.int64)
            pts = np.asarray(src.get('gt_points', np.zeros((0, 2))), np.float32).reshape(-1, 2)
            sel = (np.ones(len(labels), bool) if self.count_classes is None else
                   np.isin(labels, wanted))
            if not self._fold_keep(i):
                continue
            path = src['img_path']
            if self.check_images:
                self._check_image_header(path)
            extra = dict(img_path=path)
            if self.keep_points:
                extra['gt_points'] = pts[sel]
            if src.get('valid_hw') is not None:
                extra['valid_hw'] = tuple(int(v) for v in src['valid_hw'])
            if self.img_size is not None:
                extra['expected_hw'] = self.img_size
            data_list.append(self._info(src.get('img_id', osp.basename(path)), int(sel.sum()),
                                        **extra))
        counts = np.asarray([d['gt_count'] for d in data_list], np.int64)
        hist = np.bincount([d['gt_count_cls'] for d in data_list],
                           minlength=NUM_COUNT_CATEGORIES) if data_list else []
        what = 'all points' if self.count_classes is None else '+'.join(self.count_classes)
        print_log(f'{type(self).__name__}: {len(data_list)} images, counts of {what} from '
                  f'{cfg["type"]} (total {int(counts.sum())}, zero-count images '
                  f'{int((counts == 0).sum())}, per category {list(map(int, hist))})',
                  logger='current')
        return data_list
