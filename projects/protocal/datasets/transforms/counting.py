"""Transforms of the counting datasets (mmseg ``TRANSFORMS``): load an image (file or LYSTO
HDF5), deterministic flips, and pack ``inputs`` + a data sample carrying the count."""
import os
from typing import Dict, Optional

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import BaseDataElement

from mmseg.registry import TRANSFORMS

__all__ = ['LoadCountImage', 'CountRandomFlip', 'PackCountInputs']

_H5_CACHE: Dict[tuple, object] = {}


def _h5_file(path: str):
    """One open handle per (process, file): DataLoader workers fork, handles must not be shared."""
    key = (os.getpid(), path)
    f = _H5_CACHE.get(key)
    if f is None:
        import h5py
        f = h5py.File(path, 'r')
        _H5_CACHE[key] = f
    return f


@TRANSFORMS.register_module()
class LoadCountImage(BaseTransform):
    """Load the image of a counting sample as H x W x 3 uint8 **BGR** (mmcv convention).

    ``img_path`` is decoded with OpenCV (alpha dropped); ``h5_path`` + ``h5_index`` reads image
    ``i`` of a LYSTO file (stored RGB, converted to BGR). When the sample has ``expected_hw`` the
    size is checked. Wrong channels or size raise ``ValueError`` naming the file (and index).
    """

    def transform(self, results: dict) -> dict:
        if results.get('h5_path') is not None:
            where = f'{results["h5_path"]}[x][{results["h5_index"]}]'
            img = np.asarray(_h5_file(results['h5_path'])['x'][int(results['h5_index'])])
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f'{where}: expected an RGB image (H, W, 3), got {img.shape}')
            img = np.ascontiguousarray(img[..., ::-1])
        else:
            where = results['img_path']
            img = cv2.imread(where, cv2.IMREAD_UNCHANGED)
            if img is None:
                raise ValueError(f'{where}: could not be read as an image')
            if img.ndim != 3 or img.shape[2] not in (3, 4):
                raise ValueError(f'{where}: expected a colour (RGB) image, got an array of shape '
                                 f'{img.shape}')
            if img.dtype != np.uint8:
                raise ValueError(f'{where}: expected 8-bit colour, got {img.dtype}')
            img = np.ascontiguousarray(img[..., :3])
        exp = results.get('expected_hw')
        if exp is not None and tuple(img.shape[:2]) != tuple(exp):
            raise ValueError(f'{where}: image is {img.shape[0]}x{img.shape[1]} but '
                             f'{exp[0]}x{exp[1]} is expected')
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class CountRandomFlip(BaseTransform):
    """Random horizontal / vertical flips (counts are invariant; points, if kept, move along).

    The reference stores every training image four times (identity, H, V, HV); drawing one of the
    four at random per iteration gives the same distribution without the 4x epoch.
    """

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = float(prob)

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        pts = results.get('gt_points')
        if np.random.rand() < self.prob:
            img = img[:, ::-1]
            if pts is not None and len(pts):
                pts = pts.copy()
                pts[:, 0] = w - 1 - pts[:, 0]
        if np.random.rand() < self.prob:
            img = img[::-1]
            if pts is not None and len(pts):
                pts = pts.copy()
                pts[:, 1] = h - 1 - pts[:, 1]
        results['img'] = np.ascontiguousarray(img)
        if pts is not None:
            results['gt_points'] = pts
        return results


@TRANSFORMS.register_module()
class PackCountInputs(BaseTransform):
    """``inputs`` (3 x H x W uint8 tensor, BGR) + ``data_samples`` (a ``BaseDataElement``).

    The sample has ``gt_count`` (float tensor ``(1,)``) and ``gt_count_cls`` (long ``(1,)``) when
    the dataset knows the count, ``gt_points`` (``(N, 2)``) when the dataset kept them, and the
    metainfo ``img_id``, ``img_path`` / ``h5_path`` + ``h5_index``, ``ori_shape``, ``img_shape``,
    ``organ``, ``valid_hw``.
    """

    META_KEYS = ('img_id', 'img_path', 'h5_path', 'h5_index', 'ori_shape', 'img_shape', 'organ',
                 'valid_hw', 'sample_idx')

    def __init__(self, meta_keys: Optional[tuple] = None) -> None:
        self.meta_keys = tuple(meta_keys) if meta_keys is not None else self.META_KEYS

    def transform(self, results: dict) -> dict:
        img = results['img']
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = BaseDataElement(
            metainfo={k: results[k] for k in self.meta_keys if results.get(k) is not None})
        if results.get('gt_count') is not None:
            sample.gt_count = torch.tensor([float(results['gt_count'])])
            sample.gt_count_cls = torch.tensor([int(results['gt_count_cls'])])
        if results.get('gt_points') is not None:
            sample.gt_points = torch.as_tensor(np.asarray(results['gt_points'],
                                                          np.float32).reshape(-1, 2))
        return dict(inputs=inputs, data_samples=sample)
