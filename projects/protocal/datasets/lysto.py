"""LYSTO (Lymphocyte Assessment Hackathon) as distributed: HDF5 files of images and counts.

``training.h5``: ``x`` uint8 ``(N, 299, 299, 3)`` RGB, ``y`` integer counts of CD3/CD8-positive
lymphocytes, ``organ`` bytes ``<organ>_<suffix>`` (organ in colon / breast / prostate).
``test.h5``: ``x`` and ``organ`` only (counts are scored server side). Images stay in the file and
are read lazily by :class:`~protocal.datasets.transforms.LoadCountImage` (``h5_path`` +
``h5_index``); counts and organs are read and checked when the dataset is built.

:func:`check_lysto_h5` is the checker behind ``tools/mil/check_lysto.py`` for a downloaded copy.
"""
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from mmengine.logging import print_log

from mmseg.registry import DATASETS
from .counting import (NUM_COUNT_CATEGORIES, BaseCountDataset, check_count, count_to_category)

__all__ = ['LystoH5Dataset', 'check_lysto_h5', 'LYSTO_ORGANS', 'LYSTO_IMG_SIZE']

LYSTO_ORGANS = ('colon', 'breast', 'prostate')
LYSTO_IMG_SIZE = (299, 299)


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a pinned runtime requirement
        raise ImportError('LYSTO .h5 files need h5py: pip install h5py (see '
                          'requirements/runtime.txt)') from e
    return h5py


def _decode_organ(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode('utf-8')
    return str(value)


def _read_h5(path: str, need_counts: bool, img_size: Optional[Sequence[int]]) -> Dict[str, Any]:
    """Shapes, counts and organs of a LYSTO file, with the checks of the dataset."""
    h5py = _h5py()
    with h5py.File(path, 'r') as f:
        if 'x' not in f:
            raise ValueError(f'{path}: no "x" dataset (images); keys are {sorted(f.keys())}')
        shape = tuple(f['x'].shape)
        if len(shape) != 4 or shape[3] != 3:
            raise ValueError(f'{path}: "x" must hold RGB images (N, H, W, 3), got shape {shape}')
        if img_size is not None and tuple(shape[1:3]) != tuple(img_size):
            raise ValueError(f'{path}: images are {shape[1]}x{shape[2]} but the dataset expects '
                             f'{img_size[0]}x{img_size[1]} (img_size)')
        if f['x'].dtype != np.uint8:
            raise ValueError(f'{path}: "x" must be uint8, got {f["x"].dtype}')
        n = shape[0]
        counts = None
        if 'y' in f:
            y = np.asarray(f['y'][()])
            if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
                raise ValueError(f'{path}: "y" must hold one count per image, got shape {y.shape}')
            y = y.reshape(-1)
            if len(y) != n:
                raise ValueError(f'{path}: {n} images but {len(y)} counts in "y" (missing '
                                 f'counts from index {min(len(y), n)})')
            counts = np.asarray([check_count(v.item() if hasattr(v, 'item') else v,
                                             f'{path}: y[{i}]') for i, v in enumerate(y)],
                                np.int64)
        elif need_counts:
            raise ValueError(f'{path}: no "y" dataset (counts); a training file needs them '
                             '(test.h5 has none: pass with_counts=False)')
        organs = None
        if 'organ' in f:
            organs = [_decode_organ(v) for v in f['organ'][()]]
            if len(organs) != n:
                raise ValueError(f'{path}: {n} images but {len(organs)} entries in "organ"')
    return dict(n=n, shape=shape, counts=counts, organs=organs)


@DATASETS.register_module()
class LystoH5Dataset(BaseCountDataset):
    """LYSTO ``training.h5`` / ``test.h5`` (lazy image reading).

    Args:
        ann_file: the ``.h5`` file (joined to ``data_root``).
        with_counts: read and check ``y`` (``False`` for ``test.h5``; ``gt_count`` is then
            absent).
        organ: keep only this organ (``colon``, ``breast``, ``prostate``; the prefix of
            ``organ`` before the first ``_``), or ``None``.
        img_size: expected ``(H, W)`` (LYSTO: 299 x 299); ``None`` disables the check.
        split / split_every: the reference's fold rule (every 10th image is val).

    Bad input: a negative, non-integer or missing count raises ``ValueError`` naming the file and
    the index (``y[i]``); images that are not ``(N, 299, 299, 3)`` uint8 raise ``ValueError``.
    """

    def __init__(self,
                 ann_file: str = 'training.h5',
                 with_counts: bool = True,
                 organ: Optional[str] = None,
                 img_size: Optional[Sequence[int]] = LYSTO_IMG_SIZE,
                 **kwargs) -> None:
        if organ is not None and organ not in LYSTO_ORGANS:
            raise ValueError(f'organ must be one of {LYSTO_ORGANS} or None, got {organ!r}')
        self.with_counts = with_counts
        self.organ = organ
        super().__init__(ann_file=ann_file, img_size=img_size, **kwargs)

    def load_data_list(self) -> List[dict]:
        meta = _read_h5(self.ann_file, self.with_counts, self.img_size)
        data_list = []
        for i in range(meta['n']):
            organ = meta['organs'][i] if meta['organs'] is not None else None
            organ_name = organ.split('_')[0] if organ else None
            if self.organ is not None and organ_name != self.organ:
                continue
            if not self._fold_keep(i):
                continue
            info = dict(img_id=i + 1, h5_path=self.ann_file, h5_index=i,
                        expected_hw=tuple(meta['shape'][1:3]))
            if organ is not None:
                info.update(organ=organ_name, organ_full=organ)
            if meta['counts'] is not None:
                c = int(meta['counts'][i])
                info.update(gt_count=c, gt_count_cls=count_to_category(c))
            data_list.append(info)
        print_log(f'LystoH5Dataset: {len(data_list)} of {meta["n"]} images from {self.ann_file}'
                  f' (split={self.split}, organ={self.organ})', logger='current')
        return data_list


def check_lysto_h5(path: str, expect_n: Optional[int] = None) -> Dict[str, Any]:
    """Check a downloaded LYSTO file and summarise it.

    Returns a dict with ``images``, ``shape``, ``has_counts``, per-organ image counts,
    the histogram over the 7 count categories and count statistics. Raises ``ValueError``
    (naming the problem) for a malformed file; ``expect_n`` also checks the number of images
    (20,000 for ``training.h5``).
    """
    meta = _read_h5(path, need_counts=False, img_size=LYSTO_IMG_SIZE)
    if expect_n is not None and meta['n'] != expect_n:
        raise ValueError(f'{path}: {meta["n"]} images, expected {expect_n}')
    out: Dict[str, Any] = dict(path=path, images=meta['n'], shape=list(meta['shape']),
                               has_counts=meta['counts'] is not None)
    if meta['organs'] is not None:
        organs = Counter(o.split('_')[0] for o in meta['organs'])
        unknown = sorted(set(organs) - set(LYSTO_ORGANS))
        out['organs'] = dict(organs)
        if unknown:
            out['unknown_organs'] = unknown
    if meta['counts'] is not None:
        c = meta['counts']
        out['count_categories'] = np.bincount(count_to_category(c),
                                              minlength=NUM_COUNT_CATEGORIES).tolist()
        out['count_min'], out['count_max'] = int(c.min()), int(c.max())
        out['count_mean'] = float(c.mean())
        out['zero_count_images'] = int((c == 0).sum())
    return out
