"""Transforms for segmentation from sparse labels (mmseg ``TRANSFORMS``).

Pipeline keys: ``gt_full_seg`` (full semantic mask, uint8, never packed for training),
``gt_instance_map`` (int32 object ids, optional), ``gt_seg_map`` (what the model sees: the sparse
label in training, the full mask in val/test; ``ignore_index`` = unlabelled), ``crop_box``
(``(y1, y2, x1, x2)`` of a training crop, for the pseudo-label store).
"""
import os.path as osp
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from protocal.datasets.sparse_label_generators import (block_labels, point_labels,
                                                       scribble_labels)
from .sparse_sampling import sparse_rng

__all__ = [
    'LoadSparseSegAnnotations', 'GenerateSparseLabels', 'SparseSegRandomCrop',
    'read_label_image', 'map_mask_to_classes', 'check_label_values', 'SPARSE_SEG_META_KEYS'
]

#: meta keys to pass to ``PackSegInputs`` for sparse-label training / evaluation
SPARSE_SEG_META_KEYS = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                        'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label',
                        'sample_idx', 'sample_id', 'crop_box', 'volume_id')

MASK_MODES = ('semantic', 'instance', 'threshold')


def read_label_image(path: str) -> np.ndarray:
    """Read a label PNG/TIFF as an integer array (uint16 instance maps keep their ids)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'label file not found: {path}')
    from PIL import Image
    with Image.open(path) as im:
        array = np.array(im)
    if array.ndim == 3:
        if not (array[..., :1] == array).all():
            raise ValueError(f'{path}: label image has {array.shape[2]} differing channels; '
                             'expected a single-channel label map')
        array = array[..., 0]
    return array


def check_label_values(labels: np.ndarray, num_classes: int, ignore_index: int, path: str) -> None:
    """Raise ``ValueError`` naming ``path`` and the offending values if any is not a class or
    ``ignore_index``."""
    values = np.unique(labels)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    bad = np.concatenate([bad, values[values < 0]])
    if bad.size:
        raise ValueError(f'{path}: label values {bad.tolist()[:20]} are outside the class list '
                         f'0..{num_classes - 1} (ignore value {ignore_index})')


def map_mask_to_classes(mask: np.ndarray, mode: str, num_classes: int, ignore_index: int,
                        path: str, threshold: int = 128, instance_class: int = 1,
                        value_map: Optional[Dict[int, int]] = None) -> np.ndarray:
    """Full mask file -> semantic class map (uint8).

    * ``'semantic'``: values are classes (after the optional ``value_map`` raw -> class, e.g.
      ``{0: 0, 255: 1}``); anything else raises, naming the file and the values.
    * ``'instance'``: one id per object (0 = background) -> ``instance_class``.
    * ``'threshold'``: ``mask >= threshold`` -> ``instance_class`` (anti-aliased binary masks,
      e.g. EBHI-Seg).
    """
    if mode == 'instance':
        return np.where(mask > 0, instance_class, 0).astype(np.uint8)
    if mode == 'threshold':
        return np.where(mask >= threshold, instance_class, 0).astype(np.uint8)
    if mode != 'semantic':
        raise ValueError(f'mask_mode must be one of {MASK_MODES}, got {mode!r}')
    mask = mask.astype(np.int64)
    if value_map:
        lut_keys = np.array(sorted(value_map), dtype=np.int64)
        present = np.unique(mask)
        unknown = present[~np.isin(present, lut_keys)]
        if unknown.size:
            raise ValueError(f'{path}: mask values {unknown.tolist()[:20]} are not in value_map '
                             f'{sorted(value_map)}')
        mapped = np.empty_like(mask)
        for raw in lut_keys:  # loop over the few mapped values, not pixels
            mapped[mask == raw] = value_map[int(raw)]
        mask = mapped
    check_label_values(mask, num_classes, ignore_index, path)
    return mask.astype(np.uint8)


@TRANSFORMS.register_module()
class LoadSparseSegAnnotations(BaseTransform):
    """Load the full mask and/or a sparse label map of a sample; validate them.

    Put it after ``LoadImageFromFile``. Reads ``seg_map_path`` (full mask, mapped by ``mask_mode``)
    into ``gt_full_seg`` (+ ``gt_instance_map`` for instance masks) and ``sparse_map_path``
    (frozen sparse labels, values = classes or ``ignore_index``) into ``gt_seg_map`` when
    ``target='sparse'``. With ``target='full'`` (val / test) ``gt_seg_map`` is the full mask.

    Errors name the file: mask / image size mismatch, values outside the class list, a training
    sample with neither a full mask nor a sparse map.

    Args:
        num_classes: ``C`` (background included).
        target: ``'sparse'`` (training) or ``'full'`` (evaluation).
        mask_mode, threshold, instance_class, value_map: see :func:`map_mask_to_classes`.
        ignore_index: unlabelled value.
    """

    def __init__(self, num_classes: int, target: str = 'sparse', mask_mode: str = 'semantic',
                 threshold: int = 128, instance_class: int = 1,
                 value_map: Optional[Dict[int, int]] = None, ignore_index: int = 255) -> None:
        if target not in ('sparse', 'full'):
            raise ValueError(f"target must be 'sparse' or 'full', got {target!r}")
        if mask_mode not in MASK_MODES:
            raise ValueError(f'mask_mode must be one of {MASK_MODES}, got {mask_mode!r}')
        self.num_classes = num_classes
        self.target = target
        self.mask_mode = mask_mode
        self.threshold = threshold
        self.instance_class = instance_class
        self.value_map = {int(k): int(v) for k, v in (value_map or {}).items()}
        self.ignore_index = ignore_index

    def _check_size(self, array: np.ndarray, results: dict, path: str) -> None:
        img = results.get('img')
        if img is not None and tuple(array.shape[:2]) != tuple(img.shape[:2]):
            raise ValueError(f'{path}: label map size {tuple(array.shape[:2])} differs from the '
                             f"image size {tuple(img.shape[:2])} ({results.get('img_path')})")

    def transform(self, results: dict) -> dict:
        seg_fields = results.setdefault('seg_fields', [])
        mask_path = results.get('seg_map_path')
        if mask_path:
            raw = read_label_image(mask_path)
            self._check_size(raw, results, mask_path)
            results['gt_full_seg'] = map_mask_to_classes(
                raw, self.mask_mode, self.num_classes, self.ignore_index, mask_path,
                self.threshold, self.instance_class, self.value_map)
            if self.mask_mode == 'instance':
                results['gt_instance_map'] = raw.astype(np.int32)
        sparse_path = results.get('sparse_map_path')
        if self.target == 'full':
            if 'gt_full_seg' not in results:
                raise FileNotFoundError(f"{results.get('img_path')}: evaluation needs a full mask "
                                        '(seg_map_path) for every image')
            results['gt_seg_map'] = results.pop('gt_full_seg')
            results.pop('gt_instance_map', None)
        elif sparse_path:
            sparse = read_label_image(sparse_path)
            self._check_size(sparse, results, sparse_path)
            check_label_values(sparse, self.num_classes, self.ignore_index, sparse_path)
            results['gt_seg_map'] = sparse.astype(np.uint8)
            results['sparse_frozen'] = True
        elif 'gt_full_seg' not in results:
            raise FileNotFoundError(f"{results.get('img_path')}: training needs a sparse label "
                                    'map (sparse_map_path) or a full mask to derive one from')
        if 'gt_seg_map' in results and 'gt_seg_map' not in seg_fields:
            seg_fields.append('gt_seg_map')
        return results


@TRANSFORMS.register_module()
class GenerateSparseLabels(BaseTransform):
    """Derive sparse labels from the full mask with a seeded simulator (spec 3.3).

    The generator of an image is seeded by ``crc32(f'{seed}:{basename(sample_id or img_path)}')``
    (:func:`~protocal.datasets.transforms.sparse_sampling.sparse_rng`), so every method, epoch,
    worker and process sees the same labels. Frozen labels read from disk (``sparse_frozen``) are
    kept with ``respect_existing=True``. The full mask (and instance map) are removed from the
    results afterwards: ground truth never reaches the model in training (trap 4). Maps without
    any labelled pixel are allowed (the losses return 0 for them) but counted and warned about
    (``GenerateSparseLabels.num_empty``).

    Args:
        kind: ``'point'``, ``'scribble'`` or ``'block'``.
        num_classes: ``C``.
        seed: label seed (independent of the training seed).
        ignore_index: unlabelled value.
        respect_existing: keep frozen labels.
        **kwargs: arguments of :func:`point_labels`, :func:`scribble_labels` or
            :func:`block_labels`.
    """

    KINDS = ('point', 'scribble', 'block')
    num_empty = 0

    def __init__(self, kind: str, num_classes: int, seed: int = 0, ignore_index: int = 255,
                 respect_existing: bool = True, **kwargs) -> None:
        if kind not in self.KINDS:
            raise ValueError(f'kind must be one of {self.KINDS}, got {kind!r}')
        self.kind = kind
        self.num_classes = num_classes
        self.seed = int(seed)
        self.ignore_index = ignore_index
        self.respect_existing = respect_existing
        self.kwargs = kwargs

    def generate(self, semantic: np.ndarray, instances: Optional[np.ndarray], name: str
                 ) -> np.ndarray:
        rng = sparse_rng(self.seed, name)
        common = dict(num_classes=self.num_classes, ignore_index=self.ignore_index, **self.kwargs)
        if self.kind == 'point':
            return point_labels(semantic, rng, instances=instances, **common)
        if self.kind == 'scribble':
            return scribble_labels(semantic, rng, **common)
        return block_labels(semantic, rng, **common)

    def transform(self, results: dict) -> dict:
        full = results.pop('gt_full_seg', None)
        instances = results.pop('gt_instance_map', None)
        if self.respect_existing and results.get('sparse_frozen', False):
            sparse = results['gt_seg_map']
        else:
            if full is None:
                raise KeyError(f"{results.get('img_path')}: GenerateSparseLabels needs the full "
                               'mask (LoadSparseSegAnnotations with a seg_map_path)')
            name = results.get('sample_id') or results.get('img_path')
            sparse = self.generate(full, instances, str(name))
            results['gt_seg_map'] = sparse
            if 'gt_seg_map' not in results.setdefault('seg_fields', []):
                results['seg_fields'].append('gt_seg_map')
        if not (sparse != self.ignore_index).any():
            GenerateSparseLabels.num_empty += 1
            warnings.warn(f"{results.get('img_path')}: sparse label map has no labelled pixel "
                          f'({GenerateSparseLabels.num_empty} such maps so far); it only '
                          'contributes unlabelled-pixel losses')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(kind={self.kind!r}, seed={self.seed}, '
                f'kwargs={self.kwargs})')


@TRANSFORMS.register_module()
class SparseSegRandomCrop(BaseTransform):
    """Random crop of the image and every seg field, recording ``crop_box = (y1, y2, x1, x2)``.

    Images smaller than ``crop_size`` keep that dimension whole (the data preprocessor pads it).
    The recorded box lets the segmentor cut the same window out of the stored pseudo-labels.

    Args:
        crop_size: ``(h, w)``.
        min_labelled: try up to ``max_tries`` crops to get at least this many labelled pixels.
    """

    def __init__(self, crop_size: Sequence[int], min_labelled: int = 1, max_tries: int = 10,
                 ignore_index: int = 255) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.min_labelled = min_labelled
        self.max_tries = max(int(max_tries), 1)
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        img = results['img']
        height, width = img.shape[:2]
        ch, cw = min(self.crop_size[0], height), min(self.crop_size[1], width)
        seg = results.get('gt_seg_map')
        for _ in range(self.max_tries):
            y1 = np.random.randint(0, height - ch + 1)
            x1 = np.random.randint(0, width - cw + 1)
            if seg is None or (seg[y1:y1 + ch, x1:x1 + cw] != self.ignore_index).sum() >= \
                    self.min_labelled:
                break
        results['img'] = img[y1:y1 + ch, x1:x1 + cw]
        for key in results.get('seg_fields', []):
            results[key] = results[key][y1:y1 + ch, x1:x1 + cw]
        results['img_shape'] = (ch, cw)
        results['crop_box'] = (int(y1), int(y1 + ch), int(x1), int(x1 + cw))
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(crop_size={self.crop_size})'
