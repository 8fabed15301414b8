#!/usr/bin/env python
"""Print the demo's results side by side (written by tools/run_demo.sh).

Usage: python tools/analysis_tools/summarize_demo.py WORK_DIR METHOD [METHOD ...]
Reads WORK_DIR/<method>/metrics_{val,train}.json and WORK_DIR/classical_val.json.
"""
import json
import sys
from pathlib import Path

COLUMNS = [
    ('val', 'point/mF1', 'val mF1'),
    ('val', 'point/det_f1', 'val det F1'),
    ('val', 'point/det_recall', 'val recall'),
    ('train', 'point/det_f1', 'train det F1'),
    ('train', 'point/det_recall', 'train recall (all)'),
    ('train', 'point/unannotated_recall', 'train recall (unannotated)'),
]


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def summarize(work_dir: Path, methods) -> str:
    rows = [['method'] + [title for _, _, title in COLUMNS]]
    for method in methods:
        metrics = {split: _load(work_dir / method / f'metrics_{split}.json')
                   for split in ('val', 'train')}
        rows.append([method] + [_fmt(metrics[split].get(key)) for split, key, _ in COLUMNS])
    classical = _load(work_dir / 'classical_val.json')
    if classical:
        rows.append(['classical blob'] + [
            _fmt(classical.get(key.split('/', 1)[1])) if split == 'val' else '-'
            for split, key, _ in COLUMNS
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def _fmt(value) -> str:
    return '-' if value is None else f'{float(value):.3f}'


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__)
        return 2
    print('\nDemo results (IHC tiles, 10% of nuclei annotated for training; metric radius 6 px)')
    print(summarize(Path(argv[0]), argv[1:]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
