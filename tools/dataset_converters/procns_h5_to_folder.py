#!/usr/bin/env python
"""Convert ProCNS / WSL4MIS-style h5 files (spec 3.2) to the folder layout of ``SparseSegDataset``.

Input: one ``<stem>.h5`` per 2D image with datasets ``image`` (float in [0, 1], (H, W) or
(3, H, W) channel-first), ``mask`` (uint8 full ground truth, classes 0..C-1) and sparse labels
under the key ``--sup-type`` (``scribble``, ``scribble_noisy``, ``block``, ``keypoint``, ``box``)
with **unlabelled = C** (= ``--num-classes``).

Output ``OUT_DIR/<stem>/``: ``image.png`` (uint8 RGB; grey images replicated to 3 channels),
``mask.png`` (uint8 classes) and ``sparse_<sup-type>.png`` (uint8 classes, unlabelled = 255, the
project-wide ignore value), plus ``OUT_DIR/<split>.txt`` listing the stems. Images of any size are
kept as they are (the reference needs pre-resized h5 files; here crops / resizes are config
choices). Errors name the file: missing keys, shape mismatch, values outside 0..C.

Needs ``h5py`` (``pip install h5py``, pinned in requirements/runtime.txt)::

    python tools/dataset_converters/procns_h5_to_folder.py ProCNS/data/Polyp/train \\
        data/polyp --sup-type block --num-classes 2 --split train
"""
import argparse
import glob
import os
import os.path as osp
import sys
from typing import List, Optional

import numpy as np

SUP_TYPES = ('scribble', 'scribble_noisy', 'block', 'keypoint', 'box')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='folder with <stem>.h5 files')
    parser.add_argument('out_dir', help='output folder')
    parser.add_argument('--sup-type', required=True, choices=SUP_TYPES)
    parser.add_argument('--num-classes', type=int, required=True,
                        help='C (background included); the sparse "unlabelled" code is C')
    parser.add_argument('--split', default='train', help='name of the written split file')
    return parser.parse_args(argv)


def to_uint8_rgb(image: np.ndarray, path: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[0] in (1, 3):
        image = np.moveaxis(image, 0, -1)
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
    else:
        raise ValueError(f'{path}: image has shape {image.shape}; expected (H, W) or (3, H, W)')
    if image.min() < 0 or image.max() > 1:
        raise ValueError(f'{path}: image values [{image.min()}, {image.max()}] are outside [0, 1]')
    return np.round(image * 255).astype(np.uint8)


def convert_file(path: str, out_dir: str, sup_type: str, num_classes: int) -> str:
    import h5py
    from PIL import Image
    with h5py.File(path, 'r') as f:
        missing = [k for k in ('image', 'mask', sup_type) if k not in f]
        if missing:
            raise KeyError(f'{path}: missing datasets {missing} (has {sorted(f.keys())})')
        image, mask, sparse = f['image'][()], f['mask'][()], f[sup_type][()]
    rgb = to_uint8_rgb(image, path)
    height, width = rgb.shape[:2]
    for name, arr in (('mask', mask), (sup_type, sparse)):
        if arr.shape != (height, width):
            raise ValueError(f'{path}: {name} has shape {arr.shape}, image is {(height, width)}')
    bad = np.setdiff1d(np.unique(mask), np.arange(num_classes))
    if bad.size:
        raise ValueError(f'{path}: mask values {bad.tolist()} are outside 0..{num_classes - 1}')
    bad = np.setdiff1d(np.unique(sparse), np.arange(num_classes + 1))
    if bad.size:
        raise ValueError(f'{path}: {sup_type} values {bad.tolist()} are outside 0..{num_classes} '
                         f'(unlabelled = {num_classes})')
    sparse = np.where(sparse == num_classes, 255, sparse).astype(np.uint8)
    stem = osp.splitext(osp.basename(path))[0]
    folder = osp.join(out_dir, stem)
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(rgb).save(osp.join(folder, 'image.png'))
    Image.fromarray(mask.astype(np.uint8)).save(osp.join(folder, 'mask.png'))
    Image.fromarray(sparse).save(osp.join(folder, f'sparse_{sup_type}.png'))
    return stem


def convert(src: str, out_dir: str, sup_type: str, num_classes: int, split: str) -> List[str]:
    files = sorted(glob.glob(osp.join(src, '*.h5')))
    if not files:
        raise FileNotFoundError(f'no .h5 file in {src}')
    stems = [convert_file(p, out_dir, sup_type, num_classes) for p in files]
    with open(osp.join(out_dir, f'{split}.txt'), 'w') as f:
        f.write('\n'.join(stems) + '\n')
    return stems


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    stems = convert(args.src, args.out_dir, args.sup_type, args.num_classes, args.split)
    print(f'converted {len(stems)} files to {args.out_dir} (split file {args.split}.txt); train '
          f"with SparseSegDataset(ann_file='{args.split}.txt', mask_template='{{id}}/mask.png', "
          f"sparse_template='{{id}}/sparse_{args.sup_type}.png') and "
          "LoadSparseSegAnnotations(mask_mode='semantic')")


if __name__ == '__main__':
    main(sys.argv[1:])
