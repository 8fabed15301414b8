"""Tile a brightfield IHC image and write classical pseudo point labels per tile.

The whole image goes through the classical weak-label pipeline
(:func:`protocal.apis.classical.ihc_pseudo_labels`: colour deconvolution, H-channel Otsu +
watershed nuclei, DAB call by the mean DAB density in a 4-px perinuclear ring vs the Otsu threshold
of DAB over tissue). It runs on the full image (not per tile) so that percentiles and thresholds
are those of the whole image. The image is then cut into ``tile_size`` squares; each nucleus goes
to the tile that holds its centroid, with coordinates relative to that tile.

Output layout (``x,y,class`` CSVs, classes ``dab_positive`` / ``dab_negative``)::

    OUT_DIR/images/{train,val}/<stem>_y<y0>_x<x0>.<png|jpg>
    OUT_DIR/annotations/{train,val}/<stem>_y<y0>_x<x0>.csv

The labels are pseudo labels from a classical pipeline, not expert annotation.

Example (the bundled demo data)::

    python tools/dataset_converters/ihc_weak_labels.py --image ihc.png \
        --out-dir data/demo/ihc_points --tile-size 256 --val-tiles 1 \
        --img-format jpg --jpeg-quality 97
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from protocal.apis.classical import IHC_CLASSES, ihc_pseudo_labels
from protocal.datasets import write_csv_points

__all__ = ['read_rgb', 'tile_points', 'convert', 'parse_args', 'main']


def read_rgb(path: str) -> np.ndarray:
    """Read an image file as ``H x W x 3`` uint8 RGB (alpha dropped, grey expanded)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    with Image.open(path) as im:
        if im.mode not in ('RGB', 'RGBA', 'L'):
            raise ValueError(f'{path}: unsupported image mode {im.mode!r} (need 8-bit RGB)')
        return np.asarray(im.convert('RGB'))


def tile_points(points: np.ndarray, tile_size: int, decimals: int = 2) -> List[tuple]:
    """Assign points to square tiles.

    Coordinates are first rounded to ``decimals`` (the precision written to the CSV); a point then
    belongs to tile ``(floor(y / tile_size), floor(x / tile_size))`` and gets coordinates relative
    to that tile's origin, so every written coordinate lies in ``[0, tile_size)``.

    Args:
        points: ``(N, 2)`` array of ``(x, y)`` in image pixels.

    Returns:
        list of ``(tile_row, tile_col, x_rel, y_rel)`` in the input order.
    """
    pts = np.round(np.asarray(points, dtype=np.float64).reshape(-1, 2), decimals)
    if (pts < 0).any():
        raise ValueError('points must have non-negative coordinates')
    out = []
    for x, y in pts:
        tr, tc = int(y // tile_size), int(x // tile_size)
        x_rel = round(x - tc * tile_size, decimals)
        y_rel = round(y - tr * tile_size, decimals)
        out.append((tr, tc, x_rel, y_rel))
    return out


def _save_tile(tile: np.ndarray, path: str, img_format: str, jpeg_quality: int) -> None:
    im = Image.fromarray(tile)
    if img_format == 'png':
        im.save(path, format='PNG', optimize=True)
    else:  # 4:4:4 chroma: no colour subsampling, keeps the thin brown membranes
        im.save(path, format='JPEG', quality=jpeg_quality, subsampling=0, optimize=True)


def convert(image: str,
            out_dir: str,
            tile_size: int = 256,
            val_tiles: Sequence[int] = (),
            img_format: str = 'png',
            jpeg_quality: int = 97,
            pipeline_cfg: Optional[dict] = None) -> Dict:
    """Run the pipeline on ``image`` and write tiles + CSVs under ``out_dir``.

    Args:
        image: RGB image file; height and width must be multiples of ``tile_size``.
        out_dir: output root (created).
        tile_size: tile side, px.
        val_tiles: row-major tile indices (0-based) that go to the ``val`` split; the others are
            train.
        img_format: ``'png'`` (lossless) or ``'jpg'``.
        jpeg_quality: JPEG quality when ``img_format == 'jpg'``.
        pipeline_cfg: keyword overrides for :func:`ihc_pseudo_labels`.

    Returns:
        summary dict (thresholds, totals and per-tile counts), also printed by :func:`main`.
    """
    if img_format not in ('png', 'jpg'):
        raise ValueError(f"img_format must be 'png' or 'jpg', got {img_format!r}")
    if tile_size < 1:
        raise ValueError(f'tile_size must be positive, got {tile_size}')
    rgb = read_rgb(image)
    height, width = rgb.shape[:2]
    if height % tile_size or width % tile_size:
        raise ValueError(f'{image}: size {width}x{height} is not a multiple of tile_size '
                         f'{tile_size}')
    n_rows, n_cols = height // tile_size, width // tile_size
    n_tiles = n_rows * n_cols
    bad = [i for i in val_tiles if not 0 <= i < n_tiles]
    if bad:
        raise ValueError(f'val tile indices {bad} out of range 0..{n_tiles - 1} '
                         f'({n_rows} x {n_cols} tiles)')

    result = ihc_pseudo_labels(rgb, **(pipeline_cfg or {}))
    class_idx = result.class_indices()
    per_tile: Dict[tuple, list] = {(r, c): [] for r in range(n_rows) for c in range(n_cols)}
    for (tr, tc, x, y), k in zip(tile_points(result.calls.points, tile_size), class_idx):
        per_tile[(tr, tc)].append((y, x, IHC_CLASSES[k]))

    stem = osp.splitext(osp.basename(image))[0]
    tiles = []
    for index, (tr, tc) in enumerate(sorted(per_tile)):
        split = 'val' if index in val_tiles else 'train'
        y0, x0 = tr * tile_size, tc * tile_size
        name = f'{stem}_y{y0:04d}_x{x0:04d}'
        img_dir = osp.join(out_dir, 'images', split)
        ann_dir = osp.join(out_dir, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        _save_tile(rgb[y0:y0 + tile_size, x0:x0 + tile_size],
                   osp.join(img_dir, f'{name}.{img_format}'), img_format, jpeg_quality)
        rows = sorted(per_tile[(tr, tc)])  # by y, then x
        write_csv_points(
            osp.join(ann_dir, f'{name}.csv'),
            np.array([(x, y) for y, x, _ in rows], np.float64).reshape(-1, 2),
            [cls for _, _, cls in rows],
            decimals=2)
        counts = {cls: sum(r[2] == cls for r in rows) for cls in IHC_CLASSES}
        tiles.append(dict(index=index, name=name, split=split, x0=x0, y0=y0, **counts))
    return dict(
        image=image,
        shape=[height, width],
        num_nuclei=len(result.calls),
        num_positive=int(result.calls.positive.sum()),
        dab_threshold=round(result.dab_threshold, 6),
        median_area_px=float(np.median(result.calls.areas)) if len(result.calls) else 0.0,
        tiles=tiles)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Tile an IHC image and write classical DAB+/DAB- pseudo point labels.')
    parser.add_argument('--image', required=True, help='RGB IHC image (DAB + haematoxylin)')
    parser.add_argument('--out-dir', required=True, help='output dataset root')
    parser.add_argument('--tile-size', type=int, default=256)
    parser.add_argument('--val-tiles', type=int, nargs='*', default=[],
                        help='row-major 0-based tile indices for the val split')
    parser.add_argument('--img-format', choices=('png', 'jpg'), default='png')
    parser.add_argument('--jpeg-quality', type=int, default=97)
    parser.add_argument('--sigma', type=float, default=1.0, help='H-channel Gaussian sigma')
    parser.add_argument('--min-distance', type=int, default=6, help='watershed seed distance')
    parser.add_argument('--min-area', type=int, default=40)
    parser.add_argument('--max-area', type=int, default=3000)
    parser.add_argument('--ring-px', type=int, default=4, help='perinuclear ring width')
    parser.add_argument('--summary', default=None, help='optional JSON file for the summary')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    summary = convert(
        args.image,
        args.out_dir,
        tile_size=args.tile_size,
        val_tiles=args.val_tiles,
        img_format=args.img_format,
        jpeg_quality=args.jpeg_quality,
        pipeline_cfg=dict(sigma=args.sigma, min_distance=args.min_distance,
                          min_area=args.min_area, max_area=args.max_area, ring_px=args.ring_px))
    print(f"{summary['image']}: {summary['num_nuclei']} nuclei, {summary['num_positive']} "
          f"dab_positive, DAB Otsu threshold {summary['dab_threshold']:.4f}")
    print(f"{'tile':<22}{'split':<7}{'dab_positive':>13}{'dab_negative':>13}")
    for t in summary['tiles']:
        print(f"{t['name']:<22}{t['split']:<7}{t['dab_positive']:>13}{t['dab_negative']:>13}")
    if args.summary:
        with open(args.summary, 'w') as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == '__main__':
    main()
