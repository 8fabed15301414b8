"""Convert the reference SEL/PCL per-image h5 files to protocal's point CSVs.

The reference stores one ``N.h5`` per image (spec section 1.7, all arrays float64):

==========================  ===============  ==============================================
key                         shape            meaning
==========================  ===============  ==============================================
``class_heat_map``          (C, H, W)        full-annotation heatmap (channel c = class id c)
``sparse_class_heat_map``   (C, H, W)        sparse training target
``coords``                  (M, 2)           all points (x, y), **without labels**
``sparse_coords``           (n, 2)           kept sparse points (x, y)
``sparse_coords_label``     (n,)             their class ids
==========================  ===============  ==============================================

Three ways to get points (``--source``):

* ``coords`` (default): every point of ``coords``; its class is the foreground channel of
  ``class_heat_map`` with the largest value at the point's pixel (the pixel of a point always holds
  1.0 in its own class channel), or ``sparse_coords_label`` when the point is one of the sparse
  points. Points whose pixel is outside the heatmap or zero in every channel are skipped and
  counted.
  An ``annotated`` column marks the points listed in ``sparse_coords``, so the reference's frozen
  sparse subset is kept exactly.
* ``peaks``: the reference evaluation GT (spec section 7 / trap T14): ``peak_local_max`` on each
  channel of ``class_heat_map`` (``--min-distance 12 --exclude-border 3``). Use it only to
  reproduce the reference numbers; it merges close cells and drops cells near the border.
* ``sparse``: only ``sparse_coords`` with ``sparse_coords_label`` (all annotated).

The class column holds the channel id (1, 2, ...), i.e. ``class_id_base=1`` in the dataset, or names
with ``--channel-names tumor other`` (name of channel 1, 2, ...). Needs ``h5py``
(``pip install h5py``).

Example::

    python tools/dataset_converters/h5_heatmaps_to_csv.py /data/groud_truth_tumor_50/train \\
        data/her2/ground_truth_50pct/train --channel-names tumor other
"""
import argparse
import os
import os.path as osp
import re
import sys
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', name)]


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError('h5_heatmaps_to_csv.py needs h5py to read the reference .h5 files: '
                          'pip install h5py') from None
    return h5py


def _xy(arr: np.ndarray, order: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64).reshape(-1, 2)
    return arr if order == 'xy' else arr[:, ::-1].copy()


def points_from_h5(path: str,
                   source: str = 'coords',
                   coords_order: str = 'xy',
                   min_distance: int = 12,
                   exclude_border: int = 3,
                   threshold: float = 0.5) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray],
                                                    Dict[str, int]]:
    """Read one reference h5 file.

    Returns:
        ``(xy (N, 2) float64, class ids (N,) int64 (1-based channel ids), annotated (N,) bool or
        None, skipped counts by reason)``.

    Raises:
        ValueError: a key needed by ``source`` is missing (the message names the file and key).
    """
    h5py = _import_h5py()
    skipped: Counter = Counter()
    with h5py.File(path, 'r') as f:

        def need(key: str):
            if key not in f:
                raise ValueError(f'{path}: missing dataset {key!r} needed by --source {source} '
                                 f'(found: {", ".join(sorted(f.keys()))})')
            return f[key]

        if source == 'sparse':
            xy = _xy(need('sparse_coords')[()], coords_order)
            ids = np.asarray(need('sparse_coords_label')[()]).reshape(-1).astype(np.int64)
            return xy, ids, np.ones(len(ids), bool), dict(skipped)
        heat = need('class_heat_map')
        n_ch, height, width = heat.shape
        if source == 'peaks':
            from skimage.feature import peak_local_max
            xs, ids = [], []
            for c in range(1, n_ch):
                peaks = peak_local_max(
                    np.asarray(heat[c]),
                    min_distance=min_distance,
                    exclude_border=exclude_border,
                    threshold_abs=threshold)
                xs.append(peaks[:, ::-1].astype(np.float64))  # (row, col) -> (x, y)
                ids.append(np.full(len(peaks), c, np.int64))
            return (np.concatenate(xs or [np.zeros((0, 2))]).reshape(-1, 2),
                    np.concatenate(ids or [np.zeros(0, np.int64)]), None, dict(skipped))
        if source != 'coords':
            raise ValueError(f'unknown source {source!r}; expected coords, peaks or sparse')
        xy = _xy(need('coords')[()], coords_order)
        sparse_xy = _xy(f['sparse_coords'][()], coords_order) if 'sparse_coords' in f else None
        sparse_ids = (np.asarray(f['sparse_coords_label'][()]).reshape(-1).astype(np.int64)
                      if 'sparse_coords_label' in f else None)
        fg = np.stack([np.asarray(heat[c]) for c in range(1, n_ch)]) if n_ch > 1 else None
    cols = np.floor(xy[:, 0]).astype(np.int64) if len(xy) else np.zeros(0, np.int64)
    rows = np.floor(xy[:, 1]).astype(np.int64) if len(xy) else np.zeros(0, np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    ids = np.zeros(len(xy), np.int64)
    if fg is not None and inside.any():
        values = fg[:, rows[inside], cols[inside]]  # (C-1, n_inside)
        best = values.argmax(axis=0)
        ids[inside] = np.where(values.max(axis=0) > 0, best + 1, 0)
    annotated = None
    if sparse_xy is not None:
        annotated = np.zeros(len(xy), bool)
        lookup = {(round(x, 6), round(y, 6)): i for i, (x, y) in enumerate(sparse_xy)}
        for i, (x, y) in enumerate(xy):
            j = lookup.get((round(x, 6), round(y, 6)))
            if j is not None:
                annotated[i] = True
                if sparse_ids is not None and j < len(sparse_ids):
                    ids[i] = sparse_ids[j]
    keep = ids > 0
    skipped['outside the heatmap'] += int((~inside & ~keep).sum())
    skipped['without class evidence in class_heat_map'] += int((inside & ~keep).sum())
    return xy[keep], ids[keep], None if annotated is None else annotated[keep], {
        k: v for k, v in skipped.items() if v}


def convert(h5_dir: str,
            out_dir: str,
            source: str = 'coords',
            channel_names: Optional[Sequence[str]] = None,
            coords_order: str = 'xy',
            min_distance: int = 12,
            exclude_border: int = 3,
            threshold: float = 0.5,
            write_annotated: bool = True) -> Dict[str, int]:
    """Convert every ``*.h5`` in ``h5_dir`` to ``out_dir/<stem>.csv``; returns counts."""
    from protocal.datasets.annotation_io import write_csv_points

    names = sorted((n for n in os.listdir(h5_dir) if n.lower().endswith(('.h5', '.hdf5'))),
                   key=_natural_key)
    if not names:
        raise FileNotFoundError(f'no *.h5 files in {h5_dir}')
    stats: Counter = Counter()
    for name in names:
        path = osp.join(h5_dir, name)
        xy, ids, annotated, skipped = points_from_h5(path, source, coords_order, min_distance,
                                                     exclude_border, threshold)
        if skipped:
            print(f'{path}: skipped ' + ', '.join(f'{v} {k}' for k, v in skipped.items()),
                  file=sys.stderr)
        classes: List = [
            channel_names[i - 1] if channel_names and i - 1 < len(channel_names) else int(i)
            for i in ids
        ]
        write_csv_points(
            osp.join(out_dir, osp.splitext(name)[0] + '.csv'), xy, classes,
            annotated if write_annotated else None)
        stats['files'] += 1
        stats['points'] += len(ids)
        stats['annotated'] += int(annotated.sum()) if annotated is not None else 0
        stats['skipped'] += sum(skipped.values())
    return dict(stats)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='reference SEL/PCL h5 files -> protocal point CSVs',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__)
    parser.add_argument('h5_dir', help='folder of N.h5 files')
    parser.add_argument('out_dir', help='output folder of N.csv files')
    parser.add_argument('--source', choices=('coords', 'peaks', 'sparse'), default='coords')
    parser.add_argument(
        '--channel-names', nargs='+', help='class name of heatmap channel 1, 2, ... (default: ids)')
    parser.add_argument(
        '--coords-order', choices=('xy', 'yx'), default='xy',
        help='column order of coords / sparse_coords (the reference writes x, y)')
    parser.add_argument('--min-distance', type=int, default=12, help='peaks: min_distance')
    parser.add_argument('--exclude-border', type=int, default=3, help='peaks: exclude_border')
    parser.add_argument('--threshold', type=float, default=0.5, help='peaks: threshold_abs')
    parser.add_argument(
        '--no-annotated', action='store_true',
        help='do not write the annotated column (all points become annotated)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    stats = convert(args.h5_dir, args.out_dir, args.source, args.channel_names, args.coords_order,
                    args.min_distance, args.exclude_border, args.threshold, not args.no_annotated)
    print(f'wrote {stats.get("files", 0)} files with {stats.get("points", 0)} points '
          f'({stats.get("annotated", 0)} annotated, {stats.get("skipped", 0)} skipped) to '
          f'{args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
