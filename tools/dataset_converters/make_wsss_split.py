"""Case-disjoint train/val/test split files for a class-folder WSSS dataset (e.g. EBHI-Seg).

Reads a manifest CSV with columns ``class,stem,case_id`` (EBHI-Seg's ``manifest.csv``) and writes
``<out_prefix>_{train,val,test}.txt``, one ``<class>/<stem>`` per line (the format of
``ImageLabelFolderDataset.split_file``). Every case (patient / specimen) goes to exactly one split,
so no patient leaks between training and evaluation. Deterministic: cases are visited in the order
of the sha256 of their id and each goes to the split whose per-class quota it fills best.

Examples::

    python tools/dataset_converters/make_wsss_split.py data/real/ebhi_seg/manifest.csv \
        data/real/splits/ebhi_seg
    python tools/dataset_converters/make_wsss_split.py /path/to/ebhi_seg/manifest.csv \
        data/real/splits/ebhi_seg96
"""
from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

SPLITS = ('train', 'val', 'test')


def make_split(rows: Sequence[dict], fractions=(0.6, 0.2, 0.2)) -> Dict[str, List[str]]:
    """Assign whole cases to splits; returns ``{split: ['<class>/<stem>', ...]}``."""
    for i, row in enumerate(rows):
        for col in ('class', 'stem', 'case_id'):
            if not row.get(col):
                raise ValueError(f'manifest row {i + 2}: empty or missing column {col!r}')
    per_class = collections.Counter(r['class'] for r in rows)
    target = {s: {c: f * n for c, n in per_class.items()} for s, f in zip(SPLITS, fractions)}
    count = {s: collections.Counter() for s in SPLITS}
    cases = collections.defaultdict(list)
    for r in rows:
        cases[r['case_id']].append(r)
    order = sorted(cases, key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    out = {s: [] for s in SPLITS}
    for case in order:
        items = cases[case]
        scores = [sum(target[s][r['class']] - count[s][r['class']] for r in items) for s in SPLITS]
        best = SPLITS[max(range(len(SPLITS)), key=lambda i: (scores[i], -i))]
        for r in items:
            count[best][r['class']] += 1
            out[best].append(f"{r['class']}/{r['stem']}")
    return {s: sorted(v) for s, v in out.items()}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('manifest', help='CSV with class,stem,case_id columns')
    parser.add_argument('out_prefix', help='writes <out_prefix>_{train,val,test}.txt')
    parser.add_argument('--fractions', type=float, nargs=3, default=(0.6, 0.2, 0.2))
    args = parser.parse_args(argv)
    if not osp.isfile(args.manifest):
        raise SystemExit(f'manifest not found: {args.manifest!r}')
    with open(args.manifest, newline='') as f:
        rows = list(csv.DictReader(f))
    splits = make_split(rows, args.fractions)
    os.makedirs(osp.dirname(osp.abspath(args.out_prefix)), exist_ok=True)
    for name, items in splits.items():
        path = f'{args.out_prefix}_{name}.txt'
        with open(path, 'w') as f:
            f.write(f'# case-disjoint {name} split of {osp.basename(args.manifest)} '
                    f'(tools/dataset_converters/make_wsss_split.py)\n')
            f.writelines(item + '\n' for item in items)
        classes = collections.Counter(i.split('/')[0] for i in items)
        print(f'{path}: {len(items)} images  ' +
              ', '.join(f'{c}={n}' for c, n in sorted(classes.items())))


if __name__ == '__main__':
    main(sys.argv[1:])
