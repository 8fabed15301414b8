"""Image loading for histology tiles (8/16-bit, grayscale, RGBA, PNG/JPEG/TIFF)."""
import os.path as osp
from typing import Optional

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.fileio import get

from mmdet.registry import TRANSFORMS

__all__ = ['LoadHistologyImage', 'to_bgr_uint8']


def _scale_to_uint8(img: np.ndarray, mode: str) -> np.ndarray:
    """Map a non-uint8 image to uint8 (``'minmax'`` per image, or ``'full_range'`` of the dtype)."""
    if mode == 'full_range' and np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = (img.astype(np.float64) - info.min) * (255.0 / (info.max - info.min))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if mode not in ('minmax', 'full_range'):
        raise ValueError(f'uint16_scaling must be "minmax" or "full_range", got {mode!r}')
    data = img.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(img.shape, np.uint8)
    lo, hi = float(data[finite].min()), float(data[finite].max())
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    out = (np.where(finite, data, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_bgr_uint8(img: np.ndarray, source: str = 'the image', uint16_scaling: str = 'minmax'
                 ) -> np.ndarray:
    """Convert a decoded image to H x W x 3 uint8 (channel order kept, i.e. BGR from OpenCV).

    * 16-bit / float images are scaled to uint8 (``uint16_scaling='minmax'``: per-image min..max
      to 0..255, which suits microscopy tiles that use a fraction of the 16-bit range;
      ``'full_range'``: the dtype range, e.g. ``v / 257`` for uint16). Bool images map to 0/255.
    * grayscale (H x W or H x W x 1) is repeated to 3 channels; a 4th (alpha) channel is dropped.

    Raises:
        ValueError: the array is not H x W, H x W x 1, H x W x 3 or H x W x 4, or is empty.
    """
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.size == 0 or (
            img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        shape = getattr(img, 'shape', type(img).__name__)
        raise ValueError(f'{source}: expected an RGB image (H x W x 3), a grayscale image or RGBA; '
                         f'got an array of shape {shape}')
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = _scale_to_uint8(img, uint16_scaling)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img)


def _decode(buffer: bytes, path: str) -> Optional[np.ndarray]:
    img = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None and path.lower().endswith(('.tif', '.tiff')):
        try:  # TIFF variants OpenCV cannot decode (e.g. some compressions, planar layouts)
            import tifffile
            arr = tifffile.imread(path)
        except Exception:  # noqa: BLE001
            return None
        arr = np.asarray(arr)
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W)
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            arr = arr[..., [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]  # RGB(A) -> BGR(A)
        return arr
    return img


@TRANSFORMS.register_module()
class LoadHistologyImage(BaseTransform):
    """Load an image as H x W x 3 uint8 BGR (like ``mmcv.imread``), robust to histology formats.

    Reads ``results['img_path']`` with OpenCV (``IMREAD_UNCHANGED``; TIFFs OpenCV cannot decode
    fall back to ``tifffile`` when installed) and converts it with :func:`to_bgr_uint8`: 16-bit
    -> uint8, grayscale -> 3 channels, RGBA -> alpha dropped (trap T18 of the spec: the reference
    fed RGBA PNGs as 4 channels).

    If ``results`` already holds an ``img`` array (inference on arrays) it is converted the same
    way and only the shapes are filled in.

    Added / updated keys: ``img``, ``img_shape``, ``ori_shape`` (both ``(h, w)``).

    Args:
        to_float32: return float32 instead of uint8.
        uint16_scaling: ``'minmax'`` (per image) or ``'full_range'`` (dtype range) for 16-bit /
            float images.
        backend_args: passed to :func:`mmengine.fileio.get` (local files by default).

    Raises:
        FileNotFoundError: the file does not exist.
        OSError: the file cannot be decoded as an image (names the path).
        ValueError: the decoded array is not an image (e.g. 2-channel or volumetric).
    """

    def __init__(self,
                 to_float32: bool = False,
                 uint16_scaling: str = 'minmax',
                 backend_args: Optional[dict] = None) -> None:
        if uint16_scaling not in ('minmax', 'full_range'):
            raise ValueError(f'uint16_scaling must be "minmax" or "full_range", got '
                             f'{uint16_scaling!r}')
        self.to_float32 = to_float32
        self.uint16_scaling = uint16_scaling
        self.backend_args = backend_args

    def _read(self, path: str) -> np.ndarray:
        if self.backend_args is None and not osp.isfile(path):
            raise FileNotFoundError(f'image file {path!r} does not exist')
        buffer = get(path, backend_args=self.backend_args)
        img = _decode(buffer, path)
        if img is None:
            raise OSError(f'{path}: could not decode the file; expected an RGB image (PNG, JPEG, '
                          'TIFF, BMP). Is it corrupt or not an image?')
        return img

    def transform(self, results: dict) -> dict:
        """Load (or convert) the image and set ``img``, ``img_shape`` and ``ori_shape``."""
        if results.get('img') is not None:
            source = results.get('img_path') or 'results["img"]'
            img = to_bgr_uint8(np.asarray(results['img']), str(source), self.uint16_scaling)
        else:
            path = results.get('img_path')
            if path is None:
                raise KeyError('LoadHistologyImage needs results["img_path"] or results["img"]')
            img = to_bgr_uint8(self._read(str(path)), str(path), self.uint16_scaling)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(to_float32={self.to_float32}, '
                f'uint16_scaling={self.uint16_scaling!r}, backend_args={self.backend_args})')
