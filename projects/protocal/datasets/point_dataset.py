"""Generic point-annotation dataset (one image + one annotation file per sample, or COCO JSON).

All annotation files are parsed when the dataset is built (``lazy_init=False``), so that a broken
file, an unknown class or a missing image is reported before training starts; the pipeline then
only reads images. See ``docs/datasets.md`` for the layouts and examples.
"""
import logging
import os
import os.path as osp
import re
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from mmdet.registry import DATASETS
from protocal.structures import points_inside
from .annotation_io import (ANN_SUFFIXES, ClassResolver, RawPoints, read_coco_points, read_points)

__all__ = ['PointDataset', 'IMG_SUFFIXES', 'read_image_size']

#: image suffixes a :class:`PointDataset` picks up by default (case-insensitive)
IMG_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
_MAX_LISTED = 20


def _natural_key(name: str) -> List[Any]:
    """Sort key that orders ``2.png`` before ``10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', name)]


def _list_names(names: Sequence[str]) -> str:
    names = sorted(names, key=_natural_key)
    shown = ', '.join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f', ... ({len(names) - _MAX_LISTED} more)'
    return shown


def read_image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` of an image file, reading only its header when possible.

    Tries PIL (header only), then tifffile for TIFFs, then a full decode with OpenCV.

    Raises:
        OSError: the file cannot be read as an image.
    """
    try:
        from PIL import Image
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001  (fall through to the other readers)
        pass
    if path.lower().endswith(('.tif', '.tiff')):
        try:
            import tifffile
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        except Exception:  # noqa: BLE001
            pass
    import cv2
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f'{path}: could not read the image (expected an RGB image such as PNG, JPEG '
                      'or TIFF); is the file corrupt or not an image?')
    return int(img.shape[1]), int(img.shape[0])


@DATASETS.register_module()
class PointDataset(BaseDataset):
    """Images with point annotations (cell centres), for heatmap point detectors.

    Per-image formats (``csv``, ``geojson``) pair ``<img>/<stem>.<img suffix>`` with
    ``<ann>/<stem>.<csv|geojson|json>`` by file stem. The ``coco`` format reads one JSON
    (``ann_file``) whose ``images[].file_name`` are relative to ``data_prefix['img']``.

    Each ``data_info`` holds ``img_path``, ``img_id`` (the file stem, or the COCO image id),
    ``height``/``width`` when known, ``gt_points`` (float32 ``(N, 2)`` x, y),
    ``gt_points_labels`` (int64 ``(N,)`` 0-based), ``gt_points_annotated`` (bool ``(N,)``, all
    True unless the file stores flags), ``sparse_frozen`` (True when the flags come from the file,
    see :class:`~protocal.datasets.transforms.SparsePointSampling`), ``ann_path`` and ``mpp``
    (when known).

    Bad input:

    * points with NaN/inf coordinates or outside the image (inside means
      ``-0.5 <= x < width - 0.5`` and ``-0.5 <= y < height - 0.5``, the pixel-centre convention of
      ``docs/architecture.md``; the size is read from the image header) and non-point entries (GeoJSON
      polygons, COCO keypoints with ``v=0``) are dropped with **one** warning per file giving the
      counts;
    * points whose class maps to ``None`` in ``class_map`` are dropped silently and counted in one
      INFO line for the whole dataset;
    * an unknown class raises ``ValueError`` naming the file and the row; an unparsable file
      raises ``ValueError`` naming the file and what was expected;
    * images and annotation files that do not pair up raise ``ValueError`` listing the unmatched
      names on both sides (images without annotation file are allowed, with zero points, when
      ``allow_missing_annotations=True``);
    * a missing ``data_root`` / folder / ``ann_file`` raises ``FileNotFoundError`` with the expected
      layout. An empty annotation file is valid (zero points).

    Args:
        data_root: dataset root; relative prefixes and ``ann_file`` are joined to it.
        data_prefix: ``dict(img=..., ann=...)`` folders of images and per-image annotation files
            (``ann`` is not used by the ``coco`` format).
        ann_file: the COCO JSON (``coco`` format only).
        ann_format: ``'csv'``, ``'geojson'``, ``'coco'`` or ``'auto'`` (``coco`` when
            ``ann_file`` is set, otherwise per file by suffix: ``.csv`` -> csv,
            ``.geojson``/``.json`` -> geojson).
        metainfo: must give ``classes`` (unless the subclass defines them); ``palette`` optional.
        class_map: ids / names found in the files -> class names of ``metainfo['classes']``, or
            ``None`` to drop those points. See :class:`~protocal.datasets.ClassResolver`.
        class_id_base: integer id of the first class in the files (default 1: OCELOT and
            reference-heatmap convention). ``None`` accepts names / ``class_map`` keys only.
        img_suffixes: image suffixes to pick up (case-insensitive).
        mpp: microns per pixel, stored in every ``data_info`` when given.
        allow_missing_annotations: images without annotation get zero points instead of an error.
        check_bounds: drop points outside the image (reads the image header once per image with
            points).
        **kwargs: forwarded to :class:`mmengine.dataset.BaseDataset` (``pipeline``,
            ``test_mode``, ``filter_cfg=dict(filter_empty_gt=True)``, ``indices``, ...).
    """

    METAINFO: dict = dict(classes=None, palette=None)
    FORMATS = ('auto', 'csv', 'geojson', 'coco')

    def __init__(self,
                 data_root: str = '',
                 data_prefix: Optional[dict] = None,
                 ann_file: str = '',
                 ann_format: str = 'auto',
                 metainfo: Optional[dict] = None,
                 class_map: Optional[Dict[Any, Optional[str]]] = None,
                 class_id_base: Optional[int] = 1,
                 img_suffixes: Sequence[str] = IMG_SUFFIXES,
                 mpp: Optional[float] = None,
                 allow_missing_annotations: bool = False,
                 check_bounds: bool = True,
                 **kwargs) -> None:
        if ann_format not in self.FORMATS:
            raise ValueError(f'ann_format must be one of {self.FORMATS}, got {ann_format!r}')
        if data_prefix is None:
            data_prefix = dict(img='images/train', ann='annotations/train')
        data_prefix = dict(data_prefix)
        if 'img' not in data_prefix:
            raise ValueError(f'data_prefix needs an "img" entry, got {data_prefix}')
        if ann_format == 'auto' and ann_file:
            ann_format = 'coco'
        if ann_format == 'coco' and not ann_file:
            raise ValueError('ann_format="coco" needs ann_file (the COCO JSON)')
        if ann_format != 'coco' and 'ann' not in data_prefix:
            raise ValueError(f'data_prefix needs an "ann" entry for the {ann_format} format, got '
                             f'{data_prefix}')
        if mpp is not None and not mpp > 0:
            raise ValueError(f'mpp must be a positive number of microns per pixel, got {mpp!r}')
        self.ann_format = ann_format
        self.class_map = class_map
        self.class_id_base = class_id_base
        self.img_suffixes = tuple(s.lower() for s in img_suffixes)
        self.mpp = mpp
        self.allow_missing_annotations = allow_missing_annotations
        self.check_bounds = check_bounds
        kwargs.setdefault('serialize_data', True)
        super().__init__(
            ann_file=ann_file,
            metainfo=metainfo,
            data_root=data_root,
            data_prefix=data_prefix,
            **kwargs)

    # ------------------------------------------------------------------------------ messages
    def _layout_hint(self) -> str:
        """The expected folder layout, shown when something is missing."""
        if self.ann_format == 'coco':
            return ('Expected layout (COCO format):\n'
                    '  <data_root>/\n'
                    f'    {self._rel("img")}/   images referenced by images[].file_name\n'
                    f'    {self._rel_ann_file()}   COCO JSON (images, categories, annotations)\n'
                    'See docs/datasets.md.')
        suffix = {'csv': '.csv', 'geojson': '.geojson'}.get(self.ann_format, '.csv')
        return ('Expected layout (one annotation file per image, paired by file name stem):\n'
                '  <data_root>/\n'
                f'    {self._rel("img")}/   0001.png, 0002.png, ...\n'
                f'    {self._rel("ann")}/   0001{suffix}, 0002{suffix}, ...\n'
                'See docs/datasets.md.')

    def _rel(self, key: str) -> str:
        path = self.data_prefix.get(key, '')
        if self.data_root and path.startswith(str(self.data_root)):
            return osp.relpath(path, self.data_root)
        return path

    def _rel_ann_file(self) -> str:
        if self.data_root and self.ann_file.startswith(str(self.data_root)):
            return osp.relpath(self.ann_file, self.data_root)
        return self.ann_file

    def _require(self, path: str, what: str, is_dir: bool = True) -> None:
        exists = osp.isdir(path) if is_dir else osp.isfile(path)
        if not exists:
            raise FileNotFoundError(f'{type(self).__name__}: {what} {path!r} does not exist.\n'
                                    f'{self._layout_hint()}')

    # ------------------------------------------------------------------------------- loading
    def _classes(self) -> Tuple[str, ...]:
        classes = self._metainfo.get('classes')
        if not classes or isinstance(classes, str):
            raise ValueError(f'{type(self).__name__} needs the class names: pass '
                             "metainfo=dict(classes=('name1', 'name2', ...))")
        return tuple(classes)

    def _list_images(self, img_dir: str) -> Dict[str, str]:
        """``stem -> file name`` of the images in ``img_dir`` (raises on duplicate stems)."""
        images: Dict[str, str] = {}
        for name in os.listdir(img_dir):
            stem, ext = osp.splitext(name)
            if name.startswith('.') or ext.lower() not in self.img_suffixes:
                continue
            if stem in images:
                raise ValueError(f'{img_dir}: two images share the stem {stem!r} ({images[stem]}, '
                                 f'{name}); annotations are paired by stem, rename one')
            images[stem] = name
        return images

    def _list_annotations(self, ann_dir: str) -> Dict[str, str]:
        if self.ann_format == 'auto':
            suffixes = ANN_SUFFIXES['csv'] + ANN_SUFFIXES['geojson']
        else:
            suffixes = ANN_SUFFIXES[self.ann_format]
        anns: Dict[str, str] = {}
        for name in os.listdir(ann_dir):
            stem, ext = osp.splitext(name)
            if name.startswith('.') or ext.lower() not in suffixes:
                continue
            if stem in anns:
                raise ValueError(f'{ann_dir}: two annotation files share the stem {stem!r} '
                                 f'({anns[stem]}, {name}); keep one per image')
            anns[stem] = name
        return anns

    def _mismatch_error(self, img_dir: str, ann_dir: str, images_only: Sequence[str],
                        anns_only: Sequence[str]) -> ValueError:
        lines = [f'{type(self).__name__}: images in {img_dir!r} and annotations in {ann_dir!r} '
                 f'do not pair up by file stem.']
        if images_only:
            lines.append(f'  {len(images_only)} image(s) without annotation: '
                         f'{_list_names(images_only)}')
        if anns_only:
            lines.append(f'  {len(anns_only)} annotation(s) without image: '
                         f'{_list_names(anns_only)}')
        if images_only and not anns_only:
            lines.append('Pass allow_missing_annotations=True to use images without annotation '
                         'file as images with zero points.')
        return ValueError('\n'.join(lines))

    def load_data_list(self) -> List[dict]:
        """Pair images with annotations, parse every file and build the data infos."""
        if self.data_root and not osp.isdir(self.data_root):
            raise FileNotFoundError(f'{type(self).__name__}: data_root {self.data_root!r} does '
                                    f'not exist.\n{self._layout_hint()}')
        self._resolver = ClassResolver(self._classes(), self.class_map, self.class_id_base)
        self._dropped_by_map: Counter = Counter()
        img_dir = self.data_prefix['img']
        self._require(img_dir, 'image folder')
        if self.ann_format == 'coco':
            samples = self._coco_samples(img_dir)
        else:
            samples = self._per_image_samples(img_dir)
        data_list = [self._build_info(*s) for s in samples]
        n_points = sum(len(d['gt_points_labels']) for d in data_list)
        counts = np.bincount(
            np.concatenate([d['gt_points_labels'] for d in data_list] + [np.zeros(0, np.int64)]),
            minlength=len(self._resolver.classes))
        per_class = ', '.join(f'{c}: {int(n)}' for c, n in zip(self._resolver.classes, counts))
        print_log(
            f'{type(self).__name__}: {len(data_list)} images, {n_points} points ({per_class}) '
            f'from {img_dir}', logger='current')
        if self._dropped_by_map:
            detail = ', '.join(f'{k!r}: {v}' for k, v in sorted(self._dropped_by_map.items(),
                                                                   key=lambda kv: str(kv[0])))
            print_log(
                f'{type(self).__name__}: dropped {sum(self._dropped_by_map.values())} points '
                f'whose class maps to None in class_map ({detail})', logger='current')
        return data_list

    def _per_image_samples(self, img_dir: str) -> List[tuple]:
        ann_dir = self.data_prefix['ann']
        self._require(ann_dir, 'annotation folder')
        images = self._list_images(img_dir)
        anns = self._list_annotations(ann_dir)
        images_only = [images[s] for s in images if s not in anns]
        anns_only = [anns[s] for s in anns if s not in images]
        if anns_only or (images_only and not self.allow_missing_annotations):
            raise self._mismatch_error(img_dir, ann_dir, images_only, anns_only)
        samples = []
        for stem in sorted(images, key=_natural_key):
            img_path = osp.join(img_dir, images[stem])
            if stem in anns:
                ann_path = osp.join(ann_dir, anns[stem])
                raw = read_points(ann_path, self.ann_format)
            else:
                ann_path = None
                raw = RawPoints(path=img_path)
            samples.append((img_path, stem, raw, ann_path, None, None))
        return samples

    def _coco_samples(self, img_dir: str) -> List[tuple]:
        self._require(self.ann_file, 'COCO annotation file', is_dir=False)
        coco_images, per_image = read_coco_points(self.ann_file)
        referenced = {osp.normpath(im.file_name) for im in coco_images}
        missing = [im.file_name for im in coco_images
                   if not osp.isfile(osp.join(img_dir, im.file_name))]
        on_disk = self._list_images(img_dir)
        unlisted = [name for name in on_disk.values() if osp.normpath(name) not in referenced]
        if missing or (unlisted and not self.allow_missing_annotations):
            raise self._mismatch_error(img_dir, self.ann_file, unlisted, missing)
        samples = [(osp.join(img_dir, im.file_name), im.id, per_image[im.id], self.ann_file,
                    im.width, im.height) for im in coco_images]
        for name in sorted(unlisted, key=_natural_key):
            samples.append((osp.join(img_dir, name), osp.splitext(name)[0],
                            RawPoints(path=self.ann_file), None, None, None))
        return samples

    def _build_info(self, img_path: str, img_id: Any, raw: RawPoints, ann_path: Optional[str],
                    width: Optional[int], height: Optional[int]) -> dict:
        """Resolve classes, drop bad points (one warning per file) and build one data info."""
        n = len(raw)
        labels = np.empty(n, dtype=np.int64)
        cache: Dict[Tuple[Optional[str], Optional[str]], int] = {}
        for i in range(n):
            key = (raw.tokens[i], raw.alt_tokens[i] if raw.alt_tokens is not None else None)
            if key not in cache:
                try:
                    cache[key] = self._resolver.resolve(*key)
                except KeyError as e:
                    raise ValueError(f'{raw.path}, {raw.where[i]}: {e.args[0]}') from None
            labels[i] = cache[key]
        xy = raw.xy
        keep = labels != ClassResolver.DROP
        if not keep.all():
            self._dropped_by_map.update(raw.tokens[i] for i in np.flatnonzero(~keep))
        finite = np.isfinite(xy).all(axis=1)
        n_nonfinite = int((keep & ~finite).sum())
        keep &= finite
        n_outside = 0
        if self.check_bounds and keep.any():
            if width is None or height is None:
                width, height = read_image_size(img_path)
            inside = points_inside(xy, (height, width))
            n_outside = int((keep & ~inside).sum())
            keep &= inside
        reasons = []
        if n_nonfinite:
            reasons.append(f'{n_nonfinite} with NaN/inf coordinates')
        if n_outside:
            reasons.append(f'{n_outside} outside the {width}x{height} image')
        reasons.extend(f'{v} {k}' + ('s' if v > 1 else '') for k, v in raw.skipped.items() if v)
        if reasons:
            total = n_nonfinite + n_outside + sum(raw.skipped.values())
            print_log(
                f'{raw.path}: dropped {total} annotation(s) ({", ".join(reasons)}); '
                f'{int(keep.sum())} points kept', logger='current', level=logging.WARNING)
        annotated = (np.ones(int(keep.sum()), dtype=bool)
                     if raw.annotated is None else raw.annotated[keep].astype(bool))
        info = dict(
            img_path=img_path,
            img_id=img_id,
            ann_path=ann_path,
            gt_points=xy[keep].astype(np.float32).reshape(-1, 2),
            gt_points_labels=labels[keep],
            gt_points_annotated=annotated,
            sparse_frozen=raw.annotated is not None)
        if width is not None and height is not None:
            info['width'], info['height'] = int(width), int(height)
        if self.mpp is not None:
            info['mpp'] = float(self.mpp)
        return info

    def filter_data(self) -> List[dict]:
        """Drop images without points when ``filter_cfg=dict(filter_empty_gt=True)`` (training)."""
        if self.test_mode or not self.filter_cfg or not self.filter_cfg.get('filter_empty_gt'):
            return self.data_list
        return [d for d in self.data_list if len(d['gt_points_labels']) > 0]

    def get_cat_ids(self, idx: int) -> List[int]:
        """Class indices present in image ``idx`` (for ``ClassBalancedDataset``)."""
        return sorted(set(self.get_data_info(idx)['gt_points_labels'].tolist()))
