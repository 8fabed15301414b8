"""Score the trivial classical baseline (:class:`protocal.apis.BlobPointDetector`) on a split.

The detector needs no training: it finds peaks of the smoothed haematoxylin channel and calls each
one DAB-positive from the mean DAB in a disk around it (see ``projects/protocal/apis/classical.py``
for why this, and not the pipeline that made the demo labels, is the baseline). Its points are
scored with :class:`protocal.evaluation.PointF1Metric` -- the metric the learned models are
evaluated with -- so the numbers sit next to theirs. The default ``--mode ocelot --radius 6``
matches ``configs/_base_/datasets/ihc_demo_points.py``; ``--mode reference`` gives the SEL/PCL
papers' maximum bipartite matching (``d < r``, per-image averages).

Expected layout (as written by ``tools/dataset_converters/ihc_weak_labels.py``)::

    DATA_ROOT/images/<split>/*.png|jpg     DATA_ROOT/annotations/<split>/<same stem>.csv

Example::

    python tools/analysis_tools/classical_baseline.py data/demo/ihc_points --split val \\
        --radius 6 --out work_dirs/classical_val.json

With ``--agnostic`` labels are ignored (e.g. for ``data/demo/dsb2018_nuclei``, class ``nucleus``).
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from protocal.apis.classical import IHC_CLASSES, BlobPointDetector
from protocal.datasets import ClassResolver, read_csv_points
from protocal.evaluation.metrics import PointF1Metric

__all__ = ['find_pairs', 'load_gt', 'evaluate_baseline', 'parse_args', 'main']

IMG_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
AGNOSTIC_CLASS = 'nucleus'


def find_pairs(data_root: str, split: str) -> List[Tuple[str, str]]:
    """``(image, csv)`` paths of ``DATA_ROOT/images/<split>``; every image needs its CSV."""
    img_dir = osp.join(data_root, 'images', split)
    ann_dir = osp.join(data_root, 'annotations', split)
    if not osp.isdir(img_dir):
        raise FileNotFoundError(f'image folder not found: {img_dir}')
    names = sorted(n for n in os.listdir(img_dir) if n.lower().endswith(IMG_SUFFIXES))
    if not names:
        raise FileNotFoundError(f'no image ({"/".join(IMG_SUFFIXES)}) in {img_dir}')
    pairs = []
    for name in names:
        ann = osp.join(ann_dir, osp.splitext(name)[0] + '.csv')
        if not osp.isfile(ann):
            raise FileNotFoundError(f'annotation not found for {osp.join(img_dir, name)}: {ann}')
        pairs.append((osp.join(img_dir, name), ann))
    return pairs


def load_gt(path: str, classes: Sequence[str], agnostic: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Points ``(N, 2)`` and 0-based labels ``(N,)`` of an ``x,y,class`` CSV."""
    raw = read_csv_points(path)
    if len(raw) and not np.isfinite(raw.xy).all():
        raise ValueError(f'{path}: non-finite coordinates')
    if agnostic:
        return raw.xy, np.zeros(len(raw), np.int64)
    resolver = ClassResolver(classes, class_id_base=None)
    labels = []
    for token, where in zip(raw.tokens, raw.where):
        try:
            labels.append(resolver.resolve(token))
        except KeyError as e:
            raise ValueError(f'{path}, {where}: {e.args[0]} (use --agnostic to ignore classes)'
                             ) from None
    return raw.xy, np.asarray(labels, np.int64)


def evaluate_baseline(detector: BlobPointDetector,
                      pairs: Sequence[Tuple[str, str]],
                      radius: float = 6.0,
                      mode: str = 'ocelot',
                      agnostic: bool = False) -> Dict:
    """Run ``detector`` on every image and score it against the CSV points.

    Returns:
        ``PointF1Metric`` scores (``{class}_precision/_recall/_f1``, ``mF1``, ``det_*``) plus
        ``images``: per-image numbers of predictions and GT points.
    """
    classes = (AGNOSTIC_CLASS, ) if agnostic else tuple(detector.classes)
    metric = PointF1Metric(mode=mode, radius=radius, classes=classes, class_agnostic=True)
    per_image = []
    for img_path, ann_path in pairs:
        with Image.open(img_path) as im:
            rgb = np.asarray(im.convert('RGB'))
        pred = detector.predict(rgb)
        gt_xy, gt_labels = load_gt(ann_path, detector.classes, agnostic)
        pred_labels = np.zeros_like(pred['labels']) if agnostic else pred['labels']
        metric.process(None, [
            dict(
                img_path=img_path,
                pred_instances=dict(points=pred['points'], labels=pred_labels,
                                    scores=pred['scores']),
                gt_instances=dict(points=gt_xy, labels=gt_labels))
        ])
        per_image.append(
            dict(image=osp.basename(img_path), num_pred=int(len(pred['points'])),
                 num_gt=int(len(gt_xy)),
                 pred_per_class={c: int((pred_labels == i).sum()) for i, c in enumerate(classes)},
                 gt_per_class={c: int((gt_labels == i).sum()) for i, c in enumerate(classes)}))
    scores = metric.compute_metrics(metric.results)
    return dict(scores, images=per_image)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    d = BlobPointDetector()
    parser = argparse.ArgumentParser(
        description='Score the trivial classical blob detector on a point dataset split.')
    parser.add_argument('data_root', help='dataset root with images/<split> and '
                        'annotations/<split>')
    parser.add_argument('--split', default='val')
    parser.add_argument('--radius', type=float, default=6.0, help='matching radius, px')
    parser.add_argument('--mode', default='ocelot', choices=('ocelot', 'reference', 'hungarian'),
                        help='PointF1Metric mode (default: as the demo configs)')
    parser.add_argument('--agnostic', action='store_true',
                        help='ignore classes (datasets whose classes are not dab_positive/'
                        'dab_negative)')
    parser.add_argument('--sigma', type=float, default=d.sigma)
    parser.add_argument('--min-distance', type=int, default=d.min_distance)
    parser.add_argument('--threshold-rel', type=float, default=d.threshold_rel)
    parser.add_argument('--threshold-abs', type=float, default=d.threshold_abs)
    parser.add_argument('--disk-radius', type=int, default=d.disk_radius)
    parser.add_argument('--dab-threshold', type=float, default=None,
                        help='fixed DAB OD threshold (default: per-image Otsu over tissue)')
    parser.add_argument('--out', default=None, help='write the scores as JSON here')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    detector = BlobPointDetector(
        sigma=args.sigma,
        min_distance=args.min_distance,
        threshold_rel=args.threshold_rel,
        threshold_abs=args.threshold_abs,
        disk_radius=args.disk_radius,
        dab_threshold=args.dab_threshold,
        classes=IHC_CLASSES)
    pairs = find_pairs(args.data_root, args.split)
    result = evaluate_baseline(detector, pairs, args.radius, args.mode, args.agnostic)
    classes = (AGNOSTIC_CLASS, ) if args.agnostic else detector.classes
    print(f'{detector!r} on {args.data_root} [{args.split}], {len(pairs)} image(s), '
          f'mode={args.mode}, radius={args.radius:g} px')
    for name in classes:
        print(f'  {name:<14} P={result[f"{name}_precision"]:.3f} '
              f'R={result[f"{name}_recall"]:.3f} F1={result[f"{name}_f1"]:.3f}')
    print(f'  {"(any class)":<14} P={result["det_precision"]:.3f} R={result["det_recall"]:.3f} '
          f'F1={result["det_f1"]:.3f}   mF1={result["mF1"]:.3f}')
    result['meta'] = dict(
        detector=type(detector).__name__,
        params={k: v for k, v in vars(detector).items() if k != 'classes'},
        data_root=args.data_root,
        split=args.split,
        radius=args.radius,
        mode=args.mode,
        agnostic=args.agnostic)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'scores written to {args.out}')
    return result


if __name__ == '__main__':
    main()
