"""Convert the HER2 annotation-platform JSON (``roilist``) to protocal's point CSV layout.

Input (spec section 1.3): one JSON per image with a top-level ``roilist``; each ROI has the class
name in ``remark`` and the point in ``path.x[0]``, ``path.y[0]`` (x = column, y = row).

Output (read by ``Her2PointDataset``)::

    OUT_ROOT/img/<split>/<stem>.png            (only with --img-dir)
    OUT_ROOT/ground_truth/<split>/<stem>.csv   x,y,class

The class names in ``remark`` are site specific (Chinese in the reference data), so first list
them, then write a JSON class map from remark to the output class (``null`` drops the point)::

    python tools/dataset_converters/her2_json_to_csv.py RAW_JSON_DIR --list-classes
    python tools/dataset_converters/her2_json_to_csv.py RAW_JSON_DIR data/her2 \\
        --img-dir RAW_IMG_DIR --split train --class-map her2_map.json

The PCL label map (spec 1.3, active dictionary) corresponds to a class map that sends every
HER2-positive membrane grade to ``"tumor"`` and everything else you want to keep to ``"other"``.
Without ``--class-map`` the remark is written verbatim and can be mapped later with the dataset's
``class_map``. All points are written, including ones outside the image; the dataset drops those
with a counted warning.
"""
import argparse
import json
import os
import os.path as osp
import re
import shutil
import sys
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

IMG_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', name)]


def read_roilist(path: str) -> List[Tuple[float, float, str]]:
    """Points ``(x, y, remark)`` of one annotation-platform JSON file, in file order.

    Raises:
        ValueError: the file is not JSON, has no ``roilist`` list, or an ROI lacks ``remark`` or
            ``path.x[0]``/``path.y[0]`` (the message names the file and ROI index).
    """
    try:
        with open(path, encoding='utf-8-sig') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'could not parse {path} as JSON ({e.msg} at line {e.lineno}); expected '
                         'an object with a "roilist" list') from None
    if not isinstance(data, dict) or not isinstance(data.get('roilist'), list):
        raise ValueError(f'{path}: expected a JSON object with a "roilist" list')
    points = []
    for i, roi in enumerate(data['roilist']):
        try:
            remark = roi['remark']
            x, y = float(roi['path']['x'][0]), float(roi['path']['y'][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ValueError(f'{path}, roilist[{i}]: expected {{"remark": <class>, "path": '
                             f'{{"x": [x, ...], "y": [y, ...]}}}}, got {str(roi)[:120]}') from None
        points.append((x, y, str(remark).strip()))
    return points


def load_class_map(path: str) -> Dict[str, Optional[str]]:
    """Read a JSON object ``{remark: class name or null}``."""
    with open(path, encoding='utf-8-sig') as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict) or not all(
            v is None or isinstance(v, str) for v in mapping.values()):
        raise ValueError(f'{path}: expected a JSON object mapping remark -> class name or null')
    return {str(k).strip(): v for k, v in mapping.items()}


def _find_image(img_dir: str, stem: str) -> Optional[str]:
    for suffix in IMG_SUFFIXES + tuple(s.upper() for s in IMG_SUFFIXES):
        path = osp.join(img_dir, stem + suffix)
        if osp.isfile(path):
            return path
    return None


def _copy_as_png(src: str, dst: str) -> Tuple[int, int]:
    """Copy ``src`` to ``dst`` as PNG (RGB, alpha dropped); returns ``(width, height)``."""
    import cv2
    os.makedirs(osp.dirname(dst), exist_ok=True)
    img = cv2.imread(src, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f'{src}: could not read the image (expected an RGB image)')
    if src.lower().endswith('.png'):
        shutil.copyfile(src, dst)
    elif not cv2.imwrite(dst, img):
        raise OSError(f'could not write {dst}')
    return img.shape[1], img.shape[0]


def convert(json_dir: str,
            out_root: str,
            split: str = 'train',
            img_dir: Optional[str] = None,
            class_map: Optional[Dict[str, Optional[str]]] = None,
            image_size: Optional[Sequence[int]] = None,
            img_out: str = 'img',
            ann_out: str = 'ground_truth') -> Dict[str, int]:
    """Convert every ``*.json`` in ``json_dir``; returns counts (files, points, dropped...).

    Args:
        json_dir: folder of annotation-platform JSON files.
        out_root: output dataset root.
        split: output split folder name.
        img_dir: folder of the raw images (same stems); copied to ``out_root/img_out/split`` as
            PNG. Without it only the CSVs are written.
        class_map: remark -> class name (``None`` drops). Remarks missing from the map are an
            error listing them. Without a map the remark is written verbatim.
        image_size: ``(width, height)``: skip images of another size, as the reference kept only
            1024x1024 patches (needs ``img_dir``).
        img_out: image folder name under ``out_root``.
        ann_out: annotation folder name under ``out_root``.
    """
    from protocal.datasets.annotation_io import write_csv_points

    names = sorted((n for n in os.listdir(json_dir) if n.lower().endswith('.json')),
                   key=_natural_key)
    if not names:
        raise FileNotFoundError(f'no *.json files in {json_dir}')
    parsed = {osp.splitext(n)[0]: read_roilist(osp.join(json_dir, n)) for n in names}
    if class_map is not None:
        unknown = Counter(r for pts in parsed.values() for _, _, r in pts if r not in class_map)
        if unknown:
            raise ValueError('remarks missing from the class map (add them, null drops): ' +
                             ', '.join(f'{k!r} ({v} points)' for k, v in unknown.most_common()))
    stats = Counter()
    for stem, pts in parsed.items():
        if img_dir is not None:
            src = _find_image(img_dir, stem)
            if src is None:
                raise FileNotFoundError(f'no image for {stem}.json in {img_dir} (looked for '
                                        f'{stem} with suffix {"/".join(IMG_SUFFIXES)})')
            if image_size is not None:
                import cv2
                img = cv2.imread(src, cv2.IMREAD_UNCHANGED)
                if img is None or (img.shape[1], img.shape[0]) != tuple(image_size):
                    stats['skipped_images'] += 1
                    continue
            _copy_as_png(src, osp.join(out_root, img_out, split, stem + '.png'))
        rows = [(x, y, r if class_map is None else class_map[r]) for x, y, r in pts]
        kept = [(x, y, c) for x, y, c in rows if c is not None]
        stats['dropped_points'] += len(rows) - len(kept)
        write_csv_points(
            osp.join(out_root, ann_out, split, stem + '.csv'), [(x, y) for x, y, _ in kept],
            [c for _, _, c in kept])
        stats['files'] += 1
        stats['points'] += len(kept)
    return dict(stats)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='HER2 annotation-platform JSON (roilist) -> protocal point CSVs',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__)
    parser.add_argument('json_dir', help='folder of raw *.json annotation files')
    parser.add_argument('out_root', nargs='?', help='output dataset root (e.g. data/her2)')
    parser.add_argument('--split', default='train', help='output split folder (default: train)')
    parser.add_argument('--img-dir', help='folder of the raw images (same file stems)')
    parser.add_argument('--class-map', help='JSON file {remark: class name or null}')
    parser.add_argument(
        '--image-size', type=int, nargs=2, metavar=('W', 'H'),
        help='only keep images of this size (the reference used 1024 1024)')
    parser.add_argument('--img-out', default='img', help='image folder name (default: img)')
    parser.add_argument(
        '--ann-out', default='ground_truth', help='annotation folder name (default: ground_truth)')
    parser.add_argument(
        '--list-classes', action='store_true', help='print the remarks and their counts, then exit')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_classes:
        counts = Counter()
        for name in sorted(os.listdir(args.json_dir)):
            if name.lower().endswith('.json'):
                counts.update(r for _, _, r in read_roilist(osp.join(args.json_dir, name)))
        for remark, n in counts.most_common():
            print(f'{n:8d}  {remark}')
        return 0
    if args.out_root is None:
        raise SystemExit('out_root is required unless --list-classes is given')
    if args.image_size and not args.img_dir:
        raise SystemExit('--image-size needs --img-dir')
    class_map = load_class_map(args.class_map) if args.class_map else None
    stats = convert(args.json_dir, args.out_root, args.split, args.img_dir, class_map,
                    args.image_size, args.img_out, args.ann_out)
    print(f'wrote {stats.get("files", 0)} files, {stats.get("points", 0)} points to '
          f'{osp.join(args.out_root, args.ann_out, args.split)}; dropped '
          f'{stats.get("dropped_points", 0)} points (class map null), skipped '
          f'{stats.get("skipped_images", 0)} images of another size')
    return 0


if __name__ == '__main__':
    sys.exit(main())
