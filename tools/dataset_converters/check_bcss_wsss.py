"""Validate a downloaded BCSS-WSSS copy and print its class statistics.

Checks, per split (``train``, ``val``/``valid``, ``test``):

* the folder layout (and the ``val`` vs ``valid`` naming trap of the WSSS-Tissue release vs the
  LPD/PBIP code: either is accepted, both at once is an error);
* training names: the ``[abcd]`` label code parses, has 4 digits (TUM STR LYM NEC), names at least
  one class; images are 224 x 224 RGB;
* val/test: every image has a same-named mask, masks are single-channel (palette) with values in
  ``{0, 1, 2, 3, 4}`` (0=TUM 1=STR 2=LYM 3=NEC 4=BACK) and the image's size.

Prints images per class and label combinations (train), pixel fractions and images containing each
class (val/test). Exit status 1 if any error was found (errors are counted; the first
``--max-errors`` are printed).

Example::

    python tools/dataset_converters/check_bcss_wsss.py data/BCSS-WSSS
    python tools/dataset_converters/check_bcss_wsss.py data/BCSS-WSSS --splits val --limit 200
"""
from __future__ import annotations

import argparse
import collections
import os
import os.path as osp
import sys
from typing import List, Optional

import numpy as np
from PIL import Image

CLASSES = ('TUM', 'STR', 'LYM', 'NEC', 'BACK')
PATCH = (224, 224)


class Report:

    def __init__(self, max_errors: int) -> None:
        self.errors: List[str] = []
        self.max_errors = max_errors

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        if len(self.errors) <= self.max_errors:
            print(f'  ERROR {msg}')


def _label_code(path: str):
    from protocal.datasets.wsss import parse_label_code
    return parse_label_code(path, 4)


def check_train(root: str, rep: Report, limit: Optional[int]) -> None:
    d = osp.join(root, 'train')
    print(f'[train] {d}')
    if not osp.isdir(d):
        rep.error(f'{d}: missing (expected train/<patientID>_<x>_<y>[abcd].png)')
        return
    names = sorted(f for f in os.listdir(d) if f.lower().endswith('.png'))[:limit]
    if not names:
        rep.error(f'{d}: no .png patches')
        return
    per_class = np.zeros(4, np.int64)
    combos = collections.Counter()
    sizes = collections.Counter()
    for name in names:
        path = osp.join(d, name)
        try:
            label = _label_code(path)
        except ValueError as err:
            rep.error(str(err))
            continue
        if not label.any():
            rep.error(f'{path}: label code names no class')
            continue
        per_class += label
        combos[''.join(map(str, label))] += 1
        with Image.open(path) as im:
            sizes[(im.size, im.mode)] += 1
            if im.size != PATCH or im.mode not in ('RGB', 'RGBA'):
                rep.error(f'{path}: {im.size} {im.mode}, expected {PATCH} RGB')
    n = sum(combos.values())
    print(f'  {len(names)} patches, {n} with a valid label')
    for c, k in zip(CLASSES, per_class):
        print(f'  {c:4s} in {k:6d} patches ({k / max(n, 1):6.1%})')
    print('  label codes (TUM STR LYM NEC): ' +
          ', '.join(f'[{code}] {k}' for code, k in combos.most_common()))
    print('  sizes/modes: ' + ', '.join(f'{s}{m} x{k}' for (s, m), k in sizes.items()))


def check_masked(root: str, split: str, rep: Report, limit: Optional[int]) -> None:
    names = ['val', 'valid'] if split == 'val' else [split]
    found = [n for n in names if osp.isdir(osp.join(root, n))]
    if len(found) > 1:
        rep.error(f'{root}: both val/ and valid/ exist; keep one')
        return
    if not found:
        rep.error(f'{root}: no {" or ".join(n + "/" for n in names)} folder')
        return
    d = osp.join(root, found[0])
    note = ' (the LPD code hard-codes valid/; protocal accepts both)' if split == 'val' else ''
    print(f'[{split}] {d}{note}')
    img_dir, mask_dir = osp.join(d, 'img'), osp.join(d, 'mask')
    for sub in (img_dir, mask_dir):
        if not osp.isdir(sub):
            rep.error(f'{sub}: missing')
            return
    imgs = sorted(f for f in os.listdir(img_dir) if f.lower().endswith('.png'))[:limit]
    masks = set(os.listdir(mask_dir))
    pixels = np.zeros(5, np.int64)
    present = np.zeros(5, np.int64)
    for name in imgs:
        ip, mp = osp.join(img_dir, name), osp.join(mask_dir, name)
        if name not in masks:
            rep.error(f'{ip}: no mask {mp}')
            continue
        with Image.open(ip) as im:
            isize = im.size
        with Image.open(mp) as mm:
            if mm.mode not in ('P', 'L'):
                rep.error(f'{mp}: mode {mm.mode}, expected a palette (P) or grey (L) index mask')
                continue
            arr = np.asarray(mm)
        if arr.shape[::-1] != isize:
            rep.error(f'{mp}: size {arr.shape[::-1]} differs from the image {isize}')
        values = np.unique(arr)
        bad = values[values > 4]
        if bad.size:
            rep.error(f'{mp}: mask values {sorted(int(v) for v in bad)} are outside {{0..4}}')
            continue
        counts = np.bincount(arr.reshape(-1), minlength=5)[:5]
        pixels += counts
        present += counts > 0
    total = max(int(pixels.sum()), 1)
    print(f'  {len(imgs)} images')
    for c, (p, k) in enumerate(zip(pixels, present)):
        print(f'  {c}={CLASSES[c]:4s} pixels {p / total:6.1%}  in {k} images')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('data_root')
    parser.add_argument('--splits', nargs='+', default=['train', 'val', 'test'],
                        choices=['train', 'val', 'test'])
    parser.add_argument('--limit', type=int, help='check only the first N files of each split')
    parser.add_argument('--max-errors', type=int, default=20, help='errors printed (all counted)')
    args = parser.parse_args(argv)
    if not osp.isdir(args.data_root):
        print(f'data_root not found: {args.data_root!r}')
        return 1
    rep = Report(args.max_errors)
    for split in args.splits:
        if split == 'train':
            check_train(args.data_root, rep, args.limit)
        else:
            check_masked(args.data_root, split, rep, args.limit)
    if rep.errors:
        print(f'{len(rep.errors)} error(s) found')
        return 1
    print('OK')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
