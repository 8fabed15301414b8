#!/usr/bin/env python
"""Convert EndoNuke tiles to protocal's real-point layout (read by ``EndoNukePointDataset``).

EndoNuke (Naumov et al., "EndoNuke: Nuclei Detection Dataset for Estrogen and Progesterone
Stained IHC Endometrium Scans", Data 7(6):75, 2022, doi:10.3390/data7060075; CC BY 4.0).

Input layouts (detected automatically):

* **published** (``endonuke.ispras.ru`` release, or ``ispras/endonet``
  ``supplementary/dataset/endonuke_data/``): ``SRC/images/<id>.png`` (RGBA or RGB) and
  ``SRC/labels/<id>.txt`` with one point per line ``x y class_id`` (0 = stroma,
  1 = epithelium, 2 = other; x = column, y = row). The full release keeps one label folder per
  annotator (``labels/<annotator>/<id>.txt``); pass that folder with ``--labels-dir``.
* **bundled** (``data/real/endonuke``): ``SRC/<id>/image.png`` + ``SRC/<id>/points.csv``
  (``x,y,class``), e.g. to re-check or to cut a subset with ``--ids``.

Output::

    OUT/manifest.csv      stem,height,width,id_block,n_stroma,n_epithelium,n_other,n_points,
                          transparent_px,valid_height,image_sha256
    OUT/<id>/image.png    RGB (RGBA originals: the alpha channel is dropped, RGB unchanged)
    OUT/<id>/points.csv   x,y,class   (class names)

Acquisition batches: EndoNuke gives no slide id per tile. File numbers come in blocks (in the
EndoNet test folder: 321-784, 945-1081, 1574-1595, 4560-4787) that differ in colour and class
mix; ``id_block`` names the runs of sorted ids separated by gaps larger than ``--block-gap``
(default 100) A, B, C, ... Splits hold out whole blocks (``make_real_splits.py``).

Bad input (never a silent drop):

* a label file without image, or an image without label file: error naming the file
  (``--skip-unpaired``: skip the tile, with a counted warning);
* a class id / name that is not one of the classes: error naming the file and line;
* a malformed line: error naming the file and line;
* a point outside the image or in its transparent region (tiles 741-744 have 76 transparent
  bottom rows): dropped with one warning per file giving the count, and the total at the end
  (``--strict``: error).

Example::

    python tools/dataset_converters/endonuke_to_points.py \\
        /path/to/endonet/supplementary/dataset/endonuke_data data/endonuke_full
    python tools/dataset_converters/endonuke_to_points.py data/real/endonuke /tmp/check \\
        --ids 741 1010
"""
import argparse
import csv
import hashlib
import os
import os.path as osp
import re
import shutil
import sys
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

CLASSES = ('stroma', 'epithelium', 'other')
MANIFEST_COLUMNS = ('stem', 'height', 'width', 'id_block', 'n_stroma', 'n_epithelium', 'n_other',
                    'n_points', 'transparent_px', 'valid_height', 'image_sha256')


class ConversionError(ValueError):
    """Bad input; the message names the file."""


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', name)]


def detect_layout(src: str, labels_dir: Optional[str] = None) -> str:
    """``'published'`` (images/ + labels/) or ``'bundled'`` (<id>/image.png + points.csv)."""
    if not osp.isdir(src):
        raise FileNotFoundError(f'EndoNuke source folder {src!r} does not exist')
    if osp.isdir(osp.join(src, 'images')) and (labels_dir or osp.isdir(osp.join(src, 'labels'))):
        return 'published'
    if any(osp.isfile(osp.join(src, d, 'points.csv')) for d in os.listdir(src)):
        return 'bundled'
    raise FileNotFoundError(
        f'{src}: not an EndoNuke folder. Expected either images/<id>.png + labels/<id>.txt '
        '(published layout) or <id>/image.png + <id>/points.csv (bundled layout)')


def parse_label_txt(path: str) -> Tuple[np.ndarray, List[int]]:
    """Points ``(N, 2)`` x, y and class ids of a published label file ``x y class_id``.

    Raises:
        ConversionError: malformed line or unknown class id (file and line named).
    """
    xy, cls = [], []
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith('#'):
                continue
            parts = text.replace(',', ' ').split()
            if len(parts) != 3:
                raise ConversionError(f'{path}, line {n}: expected "x y class_id", got {text!r}')
            try:
                x, y, c = float(parts[0]), float(parts[1]), float(parts[2])
            except ValueError:
                raise ConversionError(f'{path}, line {n}: expected numbers "x y class_id", got '
                                      f'{text!r}') from None
            if not c.is_integer() or not 0 <= int(c) < len(CLASSES):
                raise ConversionError(
                    f'{path}, line {n}: unknown class id {parts[2]!r}; expected 0 (stroma), '
                    '1 (epithelium) or 2 (other)')
            xy.append((x, y))
            cls.append(int(c))
    return np.asarray(xy, np.float64).reshape(-1, 2), cls


def parse_points_csv(path: str) -> Tuple[np.ndarray, List[int]]:
    """Points and class ids of a bundled ``points.csv`` (``x,y,class``, names or ids)."""
    xy, cls = [], []
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:3] != ['x', 'y', 'class']:
            raise ConversionError(f'{path}, line 1: expected the header x,y,class, got {header}')
        for row in reader:
            if not row:
                continue
            where = f'{path}, line {reader.line_num}'
            if len(row) != 3:
                raise ConversionError(f'{where}: expected 3 columns x,y,class, got {row!r}')
            try:
                x, y = float(row[0]), float(row[1])
            except ValueError:
                raise ConversionError(f'{where}: x/y are not numbers: {row!r}') from None
            token = row[2].strip()
            if token in CLASSES:
                c = CLASSES.index(token)
            elif token.isdigit() and int(token) < len(CLASSES):
                c = int(token)
            else:
                raise ConversionError(f'{where}: unknown class {token!r}; expected one of '
                                      f'{list(CLASSES)} or 0/1/2')
            xy.append((x, y))
            cls.append(c)
    return np.asarray(xy, np.float64).reshape(-1, 2), cls


def assign_blocks(ids: Sequence[str], gap: int = 100) -> Dict[str, str]:
    """Acquisition block of every numeric id: runs of sorted ids split at gaps > ``gap``.

    Non-numeric ids get the block ``'?'``.
    """
    numeric = sorted((int(i), i) for i in ids if str(i).isdigit())
    blocks, letter, prev = {}, -1, None
    for value, name in numeric:
        if prev is None or value - prev > gap:
            letter += 1
        blocks[name] = _block_name(letter)
        prev = value
    for i in ids:
        blocks.setdefault(i, '?')
    return blocks


def _block_name(index: int) -> str:
    name = ''
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = chr(ord('A') + rem) + name
    return name


def _load_rgba(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ('RGBA', 'LA') or (im.mode == 'P' and 'transparency' in im.info):
                rgba = np.asarray(im.convert('RGBA'))
                return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3]
            return np.asarray(im.convert('RGB')), None
    except OSError as e:
        raise ConversionError(f'{path}: could not read the image ({e})') from None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def list_tiles(src: str, layout: str, labels_dir: Optional[str] = None,
               skip_unpaired: bool = False) -> Tuple[List[Tuple[str, str, str]], Counter]:
    """``[(id, image path, label path)]`` sorted by id, and counts of skipped unpaired files."""
    skipped: Counter = Counter()
    if layout == 'bundled':
        tiles = []
        for d in sorted(os.listdir(src), key=_natural_key):
            tdir = osp.join(src, d)
            if not osp.isdir(tdir):
                continue
            img, pts = osp.join(tdir, 'image.png'), osp.join(tdir, 'points.csv')
            if osp.isfile(pts) and not osp.isfile(img):
                if not skip_unpaired:
                    raise ConversionError(f'{pts}: annotation without image ({img} is missing)')
                skipped['annotation without image'] += 1
                continue
            if osp.isfile(img) and not osp.isfile(pts):
                if not skip_unpaired:
                    raise ConversionError(f'{img}: image without annotation ({pts} is missing)')
                skipped['image without annotation'] += 1
                continue
            if osp.isfile(img):
                tiles.append((d, img, pts))
        return tiles, skipped
    img_dir = osp.join(src, 'images')
    lab_dir = labels_dir or osp.join(src, 'labels')
    images = {osp.splitext(n)[0]: n for n in os.listdir(img_dir)
              if n.lower().endswith(('.png', '.tif', '.tiff', '.jpg', '.jpeg', '.bmp'))}
    labels = {osp.splitext(n)[0]: n for n in os.listdir(lab_dir) if n.endswith('.txt')}
    tiles = []
    for stem in sorted(set(images) | set(labels), key=_natural_key):
        if stem not in images:
            if not skip_unpaired:
                raise ConversionError(f'{osp.join(lab_dir, labels[stem])}: annotation without '
                                      f'image (no {stem}.png in {img_dir})')
            skipped['annotation without image'] += 1
            continue
        if stem not in labels:
            if not skip_unpaired:
                raise ConversionError(f'{osp.join(img_dir, images[stem])}: image without '
                                      f'annotation (no {stem}.txt in {lab_dir})')
            skipped['image without annotation'] += 1
            continue
        tiles.append((stem, osp.join(img_dir, images[stem]), osp.join(lab_dir, labels[stem])))
    return tiles, skipped


def convert(src: str, out: str, ids: Optional[Sequence[str]] = None,
            labels_dir: Optional[str] = None, block_gap: int = 100, strict: bool = False,
            skip_unpaired: bool = False, log=print) -> Dict[str, int]:
    """Convert ``src`` (either layout) to ``out``; returns counts (tiles, points, dropped...).

    Raises:
        ConversionError: bad input (see the module docstring).
    """
    layout = detect_layout(src, labels_dir)
    tiles, skipped = list_tiles(src, layout, labels_dir, skip_unpaired)
    for reason, n in skipped.items():
        log(f'WARNING: skipped {n} tile(s): {reason} (--skip-unpaired)')
    if ids is not None:
        wanted = [str(i) for i in ids]
        have = {t[0] for t in tiles}
        missing = [i for i in wanted if i not in have]
        if missing:
            raise ConversionError(f'{src}: requested tile(s) not found: {missing}')
        tiles = [t for t in tiles if t[0] in set(wanted)]
    src_blocks = {}
    if layout == 'bundled' and osp.isfile(osp.join(src, 'manifest.csv')):
        with open(osp.join(src, 'manifest.csv'), newline='') as f:
            src_blocks = {r['stem']: r.get('id_block', '') for r in csv.DictReader(f)}
    blocks = assign_blocks([t[0] for t in tiles], block_gap)
    blocks.update({k: v for k, v in src_blocks.items() if v and k in blocks})
    os.makedirs(out, exist_ok=True)
    rows, totals = [], Counter()
    for stem, img_path, ann_path in tiles:
        rgb, alpha = _load_rgba(img_path)
        h, w = rgb.shape[:2]
        if layout == 'published':
            xy, cls = parse_label_txt(ann_path)
        else:
            xy, cls = parse_points_csv(ann_path)
        cls = np.asarray(cls, np.int64)
        if alpha is not None:
            transparent = alpha == 0
        else:  # bundled RGB: transparent rows were stored as RGB 0 (tiles 741-744)
            transparent = np.zeros((h, w), bool)
            black = ~rgb.any(axis=2)
            rows_black = black.all(axis=1)
            last = h
            while last > 0 and rows_black[last - 1]:
                last -= 1
            transparent[last:] = True
        inside = (np.isfinite(xy).all(1) & (xy[:, 0] >= -0.5) & (xy[:, 0] < w - 0.5)
                  & (xy[:, 1] >= -0.5) & (xy[:, 1] < h - 0.5))
        in_transparent = np.zeros(len(xy), bool)
        if inside.any():
            r = np.floor(xy[inside, 1] + 0.5).astype(int)
            c = np.floor(xy[inside, 0] + 0.5).astype(int)
            in_transparent[np.flatnonzero(inside)] = transparent[r, c]
        bad_out, bad_tr = int((~inside).sum()), int(in_transparent.sum())
        if bad_out or bad_tr:
            msg = (f'{ann_path}: {bad_out} point(s) outside the {w}x{h} image, {bad_tr} in its '
                   'transparent region')
            if strict:
                raise ConversionError(msg)
            log(f'WARNING: {msg}; dropped')
            totals['dropped_outside'] += bad_out
            totals['dropped_transparent'] += bad_tr
        keep = inside & ~in_transparent
        xy, cls = xy[keep], cls[keep]
        tdir = osp.join(out, stem)
        os.makedirs(tdir, exist_ok=True)
        out_img = osp.join(tdir, 'image.png')
        if layout == 'bundled' and alpha is None:
            shutil.copyfile(img_path, out_img)
        else:
            from PIL import Image
            Image.fromarray(rgb).save(out_img)
        with open(osp.join(tdir, 'points.csv'), 'w', newline='') as f:
            writer = csv.writer(f, lineterminator='\n')
            writer.writerow(['x', 'y', 'class'])
            for (x, y), c in zip(xy, cls):
                writer.writerow([_num(x), _num(y), CLASSES[c]])
        counts = np.bincount(cls, minlength=len(CLASSES))
        n_transparent = int(transparent.sum())
        valid_h = h
        if n_transparent:
            rows_t = transparent.all(axis=1)
            valid_h = h
            while valid_h > 0 and rows_t[valid_h - 1]:
                valid_h -= 1
        rows.append(dict(stem=stem, height=h, width=w, id_block=blocks[stem],
                         n_stroma=int(counts[0]), n_epithelium=int(counts[1]),
                         n_other=int(counts[2]), n_points=int(len(cls)),
                         transparent_px=n_transparent, valid_height=valid_h,
                         image_sha256=_sha256(out_img)))
        totals['tiles'] += 1
        totals['points'] += int(len(cls))
    with open(osp.join(out, 'manifest.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)
    totals['skipped_unpaired'] = sum(skipped.values())
    log(f'{totals["tiles"]} tiles, {totals["points"]} points written to {out} '
        f'(layout {layout}); dropped {totals["dropped_outside"]} outside / '
        f'{totals["dropped_transparent"]} in transparent regions; skipped '
        f'{totals["skipped_unpaired"]} unpaired file(s)')
    return dict(totals)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f'{v:.2f}'.rstrip('0').rstrip('.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='published (images/ + labels/) or bundled EndoNuke folder')
    parser.add_argument('out', help='output folder (tile-folder layout)')
    parser.add_argument('--labels-dir', help='label folder of the published layout (default '
                        'SRC/labels; the full release has one folder per annotator)')
    parser.add_argument('--ids', nargs='+', help='convert only these tile ids')
    parser.add_argument('--block-gap', type=int, default=100,
                        help='id gap that starts a new acquisition block')
    parser.add_argument('--strict', action='store_true',
                        help='points outside the image / in transparent regions are an error')
    parser.add_argument('--skip-unpaired', action='store_true',
                        help='skip images without label file and label files without image '
                        '(counted warning) instead of failing')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        convert(args.src, args.out, args.ids, args.labels_dir, args.block_gap, args.strict,
                args.skip_unpaired)
    except (ConversionError, FileNotFoundError) as e:
        print(f'endonuke_to_points.py: error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
