"""Transforms for segmentation from image-level labels (mmseg scope).

* :class:`LoadWSSSAnnotations` reads a mask, **validates its values** and converts it to class
  indices (palette/index masks, or binary masks of the image's one class); it can derive the
  image-level label from the mask (BCSS-WSSS val/test).
* :class:`SegRandomRotate90` rotates image and mask by a multiple of 90 degrees.
* :class:`PackWSSSInputs` is mmseg's ``PackSegInputs`` plus the ``gt_cls_label`` field.
"""
from __future__ import annotations

from typing import Optional, Sequence

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

__all__ = ['LoadWSSSAnnotations', 'SegRandomRotate90', 'PackWSSSInputs', 'validate_mask_values']


def validate_mask_values(mask: np.ndarray, allowed: Sequence[int], path: str) -> None:
    """Raise ``ValueError`` naming the file and the offending values if a value is not allowed."""
    values = np.unique(mask)
    bad = np.setdiff1d(values, np.asarray(list(allowed)))
    if bad.size:
        shown = ', '.join(str(int(v)) for v in bad[:10]) + (' ...' if bad.size > 10 else '')
        raise ValueError(f'{path}: mask values {{{shown}}} are outside the documented set '
                         f'{{{", ".join(str(a) for a in allowed)}}}')


@TRANSFORMS.register_module()
class LoadWSSSAnnotations(BaseTransform):
    """Load a segmentation mask for WSSS evaluation / stage-2 training, with value checks.

    ``mask_mode``:

    * ``'index'``: one class index per pixel (BCSS-WSSS palette PNG ``0..4``, pseudo masks). Every
      value must be in ``0..bg_index`` (``bg_index`` = number of foreground classes, from the
      dataset), else ``ValueError`` naming the file and the values.
    * ``'binary'``: a grey mask of the image's **one** class (EBHI-Seg): ``value >= threshold``
      -> that class, else background. The image must have exactly one class in ``gt_cls_label``.

    Samples without ``seg_map_path`` pass through unchanged (training images with labels only).

    Args:
        mask_mode: ``'index'`` or ``'binary'``.
        threshold: binarisation threshold for ``'binary'`` (128 for EBHI-Seg).
        label_from_mask: if the sample has no ``gt_cls_label``, set it to the foreground classes
            present in the mask (the BCSS-WSSS val/test convention).
    """

    def __init__(self, mask_mode: str = 'index', threshold: int = 128,
                 label_from_mask: bool = True, backend_args: Optional[dict] = None) -> None:
        if mask_mode not in ('index', 'binary'):
            raise ValueError(f"mask_mode must be 'index' or 'binary', got {mask_mode!r}")
        self.mask_mode = mask_mode
        self.threshold = threshold
        self.label_from_mask = label_from_mask
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        path = results.get('seg_map_path')
        if not path:
            return results
        bg = results.get('bg_index')
        if bg is None:
            raise KeyError(f'{path}: the sample has no bg_index; use a protocal WSSS dataset '
                           f'(BCSSWSSSDataset, ImageLabelCSVDataset, ImageLabelFolderDataset)')
        raw = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args),
                               flag='unchanged', backend='pillow')
        if raw.ndim != 2:
            raise ValueError(f'{path}: expected a single-channel (palette or grey) mask, got '
                             f'shape {raw.shape}')
        if self.mask_mode == 'index':
            validate_mask_values(raw, range(bg + 1), path)
            mask = raw.astype(np.uint8)
        else:
            label = results.get('gt_cls_label')
            if label is None or int(np.sum(label)) != 1:
                raise ValueError(f'{path}: binary masks need exactly one image-level class, got '
                                 f'{None if label is None else list(label)}')
            cls = int(np.argmax(label))
            mask = np.where(raw >= self.threshold, cls, bg).astype(np.uint8)
        results['gt_seg_map'] = mask
        results.setdefault('seg_fields', []).append('gt_seg_map')
        if self.label_from_mask and results.get('gt_cls_label') is None:
            present = np.zeros(bg, dtype=np.int64)
            present[np.unique(mask[mask < bg]).astype(np.int64)] = 1
            results['gt_cls_label'] = present
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(mask_mode={self.mask_mode!r}, threshold={self.threshold}, '
                f'label_from_mask={self.label_from_mask})')


@TRANSFORMS.register_module()
class SegRandomRotate90(BaseTransform):
    """With probability ``prob``, rotate image and masks by ``k * 90`` degrees, ``k`` uniform in
    ``{0, 1, 2, 3}`` (albumentations ``RandomRotate90``, which the LPD code uses with p=0.5)."""

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        k = int(np.random.randint(4))
        if k == 0:
            return results
        results['img'] = np.ascontiguousarray(np.rot90(results['img'], k))
        for key in results.get('seg_fields', []):
            results[key] = np.ascontiguousarray(np.rot90(results[key], k))
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob})'


@TRANSFORMS.register_module()
class PackWSSSInputs(PackSegInputs):
    """``PackSegInputs`` that also packs ``gt_cls_label`` (float ``(C,)`` tensor) into the data
    sample, as field ``gt_cls_label``."""

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        label = results.get('gt_cls_label')
        if label is not None:
            packed['data_samples'].set_field(
                torch.as_tensor(np.asarray(label), dtype=torch.float32), 'gt_cls_label')
        return packed
