#!/usr/bin/env python
"""Print the demo's results side by side (written by tools/run_demo.sh), or pick a threshold.

Usage::

    python tools/analysis_tools/summarize_demo.py WORK_DIR METHOD [METHOD ...] \\
        [--eval-classes stroma epithelium] [--title TEXT]
    python tools/analysis_tools/summarize_demo.py --choose-thr SWEEP.json \\
        [--eval-classes stroma epithelium]

The table reads ``WORK_DIR/<method>/metrics_{val,test,train}.json`` (``tools/test.py
--metrics-json``), ``WORK_DIR/<method>/score_thr.txt`` (the threshold chosen on val) and
``WORK_DIR/classical_{val,test}.json`` (the classical detector, keys without the ``point/``
prefix). A missing file shows as ``-``. With ``--eval-classes`` the mF1 columns are the mean F1
of those classes (EndoNuke: the "other" class has no ground truth in val/test, and the metric's
mF1 would average its 0 in).

``--choose-thr`` reads a ``tools/analysis_tools/threshold_sweep.py --out`` JSON (run on the val
split) and prints the threshold with the best mean F1 of ``--eval-classes`` (default: the
metric's mF1); ties go to the threshold closest to 0.1.
"""
import argparse
import json
import re
import sys
from pathlib import Path

COLUMNS = [
    ('val', 'mF1', 'val mF1'),
    ('test', 'mF1', 'test mF1'),
    ('test', 'point/det_f1', 'test det F1'),
    ('test', 'point/det_recall', 'test recall'),
    ('train', 'point/det_recall', 'train recall (all)'),
    ('train', 'point/det_unannotated_recall', 'train recall (unannotated)'),
]


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _key(name: str) -> str:
    return re.sub(r'\W+', '_', str(name)).strip('_') or 'class'


def mean_f1(metrics: dict, eval_classes=None, prefix: str = 'point/'):
    """The metric's mF1, or the mean F1 of ``eval_classes``; ``None`` when absent."""
    if not metrics:
        return None
    if not eval_classes:
        return metrics.get(f'{prefix}mF1')
    values = [metrics.get(f'{prefix}{_key(c)}_f1') for c in eval_classes]
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _value(metrics: dict, key: str, eval_classes, prefix: str = 'point/'):
    if key == 'mF1':
        return mean_f1(metrics, eval_classes, prefix)
    return metrics.get(key if prefix else key.split('/', 1)[-1])


def summarize(work_dir: Path, methods, eval_classes=None) -> str:
    work_dir = Path(work_dir)
    rows = [['method'] + [title for _, _, title in COLUMNS] + ['thr (val)']]
    for method in methods:
        metrics = {split: _load(work_dir / method / f'metrics_{split}.json')
                   for split in ('val', 'test', 'train')}
        thr_file = work_dir / method / 'score_thr.txt'
        thr = thr_file.read_text().strip() if thr_file.is_file() else '-'
        rows.append([method] + [_fmt(_value(metrics[split], key, eval_classes))
                                for split, key, _ in COLUMNS] + [thr])
    classical = {split: _load(work_dir / f'classical_{split}.json') for split in ('val', 'test')}
    if any(classical.values()):
        rows.append(['classical blob'] + [
            _fmt(_value(classical.get(split, {}), key, eval_classes, ''))
            for split, key, _ in COLUMNS] + ['-'])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def choose_threshold(sweep: dict, eval_classes=None) -> float:
    """Threshold with the best val mean F1 (ties: closest to 0.1)."""
    best = None
    for thr, metrics in sweep.items():
        score = mean_f1(metrics, eval_classes)
        if score is None:
            raise KeyError(f'the sweep has no F1 of {eval_classes or "mF1"} at threshold {thr}')
        key = (score, -abs(float(thr) - 0.1))
        if best is None or key > best[0]:
            best = (key, float(thr))
    if best is None:
        raise ValueError('empty threshold sweep')
    return best[1]


def _fmt(value) -> str:
    return '-' if value is None else f'{float(value):.3f}'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir', nargs='?')
    parser.add_argument('methods', nargs='*')
    parser.add_argument('--eval-classes', nargs='+')
    parser.add_argument('--choose-thr', metavar='SWEEP_JSON')
    parser.add_argument('--title', default='Demo results')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.choose_thr:
        print(f'{choose_threshold(_load(Path(args.choose_thr)), args.eval_classes):g}')
        return 0
    if not args.work_dir or not args.methods:
        print(__doc__)
        return 2
    print(f'\n{args.title}')
    print(summarize(Path(args.work_dir), args.methods, args.eval_classes))
    return 0


if __name__ == '__main__':
    sys.exit(main())
