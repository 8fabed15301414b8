#!/usr/bin/env python
"""Write fixed train / val / test splits of a real-point dataset (tile-folder layout) as JSON.

Schemes:

* ``group``: the tiles of ``--test-groups`` (a manifest column: EndoNuke ``id_block``,
  DSB2018 ``group``) form the test split; from every other group ``--val-frac`` of its tiles
  (at least one when the group has 3 or more) go to val, the rest to train. This is how test
  tiles are kept away from the preparations / acquisition batches the model trained on.
* ``random``: tiles are shuffled (seeded) and cut into test / val / train by ``--test-frac`` and
  ``--val-frac``; groups are ignored (the optimistic, within-preparation estimate).

``--train-only ID ...`` forces tiles into train (DSB2018 ``8f27ebc74164`` is only partly
annotated: its precision is meaningless, so it never enters val/test; on train only recall of
never-annotated cells is measured).

The JSON holds ``train``, ``val``, ``test`` (sorted ids) and, for the record, ``meta`` with
``scheme``, ``seed``, ``groups`` (group of every tile), counts and ``notes``.
``--check SPLIT.json`` verifies that a split file only names tiles on disk (otherwise an error
listing them).

Defaults of the bundled data (written by ``--defaults``)::

    python tools/dataset_converters/make_real_splits.py --defaults
    # data/real/splits/endonuke_block.json      test = block D; val 22% of A, B, C (tiles with
    #                                             "other" nuclei kept in train)
    # data/real/splits/dsb2018_he_group.json    test = group white; val 25% of the lavender groups
    # data/real/splits/dsb2018_he_random.json   random tiles: test 1/3, val 1/6

Example on the full data (after the converters)::

    python tools/dataset_converters/make_real_splits.py data/endonuke_full --scheme group \\
        --group-column id_block --test-groups D --out data/endonuke_full/splits_block.json
"""
import argparse
import csv
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

ID_COLUMNS = ('stem', 'id12', 'id')
DSB_PARTIAL = ('8f27ebc74164', )


def read_tiles(root: str, group_column: Optional[str] = None) -> Dict[str, str]:
    """``{tile id: group}`` from ``root/manifest.csv`` (only tiles whose folder exists).

    Raises:
        FileNotFoundError: no manifest or a listed tile folder is missing.
    """
    path = osp.join(root, 'manifest.csv')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} does not exist (write it with the converters)')
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    id_col = next((c for c in ID_COLUMNS if c in rows[0]), None)
    if id_col is None:
        raise ValueError(f'{path}: no id column (one of {ID_COLUMNS})')
    if group_column is None:
        group_column = next((c for c in ('id_block', 'group') if c in rows[0]), None)
    tiles = {}
    for r in rows:
        tid = r[id_col]
        if not osp.isdir(osp.join(root, tid)):
            raise FileNotFoundError(f'{path} lists tile {tid!r} but {osp.join(root, tid)} '
                                    'does not exist')
        tiles[tid] = r.get(group_column, '') if group_column else ''
    return tiles


def read_prefer_train(root: str, column: Optional[str]) -> List[str]:
    """Tiles whose manifest ``column`` is > 0 (e.g. ``n_other``: tiles with the rare class)."""
    if not column:
        return []
    with open(osp.join(root, 'manifest.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    if rows and column not in rows[0]:
        raise ValueError(f'{root}/manifest.csv has no column {column!r}')
    id_col = next(c for c in ID_COLUMNS if c in rows[0])
    return [r[id_col] for r in rows if float(r[column] or 0) > 0]


def _sorted(ids):
    return sorted(ids, key=lambda s: (len(s), s))


def make_split(tiles: Dict[str, str], scheme: str, test_groups: Sequence[str] = (),
               val_frac: float = 0.2, test_frac: float = 0.33, seed: int = 0,
               train_only: Sequence[str] = (), prefer_train: Sequence[str] = ()
               ) -> Dict[str, List[str]]:
    """``{'train': [...], 'val': [...], 'test': [...]}`` (sorted ids).

    ``prefer_train``: tiles that go to train before any other tile of their group (val takes
    the first tiles of the seeded order), e.g. the few tiles holding a rare class.
    """
    rng = np.random.default_rng(seed)
    forced = [t for t in train_only if t in tiles]
    pool = [t for t in _sorted(tiles) if t not in forced]
    train, val, test = list(forced), [], []
    if scheme == 'group':
        unknown = [g for g in test_groups if g not in set(tiles.values())]
        if not test_groups or unknown:
            raise ValueError(f'--test-groups must name existing groups; unknown {unknown}, '
                             f'available {sorted(set(tiles.values()))}')
        for group in sorted(set(tiles[t] for t in pool)):
            members = [t for t in pool if tiles[t] == group]
            if group in test_groups:
                test += members
                continue
            order = [members[i] for i in rng.permutation(len(members))]
            order = ([t for t in order if t not in prefer_train] +
                     [t for t in order if t in prefer_train])
            n_val = int(round(val_frac * len(members)))
            if len(members) >= 3:
                n_val = max(n_val, 1)
            val += order[:n_val]
            train += order[n_val:]
    elif scheme == 'random':
        order = [pool[i] for i in rng.permutation(len(pool))]
        n_test = int(round(test_frac * len(tiles)))
        n_val = int(round(val_frac * len(tiles)))
        test, val, train = order[:n_test], order[n_test:n_test + n_val], train + order[n_test +
                                                                                          n_val:]
    else:
        raise ValueError(f'scheme must be "group" or "random", got {scheme!r}')
    return dict(train=_sorted(train), val=_sorted(val), test=_sorted(test))


def write_split(path: str, split: Dict[str, List[str]], tiles: Dict[str, str], meta: dict
                ) -> None:
    data = dict(split)
    data['meta'] = dict(meta, counts={k: len(v) for k, v in split.items()},
                        groups={t: tiles[t] for t in _sorted(tiles)})
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')


def check_split(path: str, root: str) -> Dict[str, int]:
    """Raise ``ValueError`` if the split file names tiles that are not in ``root``."""
    from protocal.datasets.real_points import read_split_ids
    tiles = read_tiles(root)
    with open(path) as f:
        data = json.load(f)
    counts = {}
    for key, value in data.items():
        if isinstance(value, list):
            counts[key] = len(read_split_ids(path, key, available=list(tiles)))
    all_ids = read_split_ids(path, None)
    if len(set(all_ids)) != len(all_ids):
        raise ValueError(f'{path}: a tile is in more than one split')
    return counts


DEFAULTS = [
    dict(root='data/real/endonuke', out='data/real/splits/endonuke_block.json', scheme='group',
         test_groups=['D'], val_frac=0.22, seed=0, train_only=[], prefer_train='n_other',
         notes='EndoNuke gives no slide id per tile; the only acquisition metadata is the file-'
               'number block (id_block A-D, batches that differ in colour and class mix). Test = '
               'the whole block D, so no test tile shares a batch (and therefore, as far as the '
               'metadata can tell, a slide) with a training tile; val = 22% of each other block '
               '(threshold choice, same batches as train). The 3 tiles with "other" nuclei '
               '(17 points in all, none in block D) are kept in train so that the class has '
               'training labels; "other" therefore cannot be scored on val/test of the bundled '
               'subset. Tile 741 has 76 transparent (black) bottom rows without points: '
               'CropToValidRegion removes them.'),
    dict(root='data/real/dsb2018_he', out='data/real/splits/dsb2018_he_group.json',
         scheme='group', test_groups=['white'], val_frac=0.25, seed=0,
         train_only=list(DSB_PARTIAL),
         notes='Test = the whole "white background" appearance group (another preparation than '
               'every training tile); val = 25% of each lavender group. 8f27ebc74164 (pink H&E, '
               'only partly annotated) is kept in train: only recall is measured there.'),
    dict(root='data/real/dsb2018_he', out='data/real/splits/dsb2018_he_random.json',
         scheme='random', test_groups=[], val_frac=1 / 6, test_frac=1 / 3, seed=0,
         train_only=list(DSB_PARTIAL),
         notes='Random tiles, groups ignored (test tiles share preparations with train: the '
               'optimistic estimate). 8f27ebc74164 (partly annotated) is kept in train.'),
]


def write_defaults(log=print) -> List[str]:
    written = []
    for d in DEFAULTS:
        tiles = read_tiles(d['root'])
        prefer = read_prefer_train(d['root'], d.get('prefer_train'))
        split = make_split(tiles, d['scheme'], d['test_groups'], d['val_frac'],
                           d.get('test_frac', 0.33), d['seed'], d['train_only'], prefer)
        meta = dict(dataset=osp.basename(d['root']), scheme=d['scheme'],
                    test_groups=d['test_groups'], val_frac=round(d['val_frac'], 4),
                    seed=d['seed'], train_only=d['train_only'],
                    prefer_train=d.get('prefer_train'), notes=d['notes'])
        write_split(d['out'], split, tiles, meta)
        log(f"{d['out']}: " + ', '.join(f'{k} {len(v)}' for k, v in split.items()))
        written.append(d['out'])
    return written


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', nargs='?', help='dataset folder with manifest.csv')
    parser.add_argument('--defaults', action='store_true',
                        help='write the default split files of the bundled data')
    parser.add_argument('--scheme', choices=['group', 'random'], default='group')
    parser.add_argument('--group-column', help='manifest column of the groups')
    parser.add_argument('--test-groups', nargs='+', default=[])
    parser.add_argument('--val-frac', type=float, default=0.2)
    parser.add_argument('--test-frac', type=float, default=0.33)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--train-only', nargs='+', default=[])
    parser.add_argument('--prefer-train-column',
                        help='manifest column; tiles where it is > 0 go to train first (rare '
                        'class, e.g. n_other)')
    parser.add_argument('--out', help='output JSON')
    parser.add_argument('--check', help='verify that this split file names only tiles in ROOT')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.defaults:
            write_defaults()
            return 0
        if not args.root:
            raise ValueError('give ROOT (or --defaults)')
        if args.check:
            counts = check_split(args.check, args.root)
            print(f'{args.check}: OK ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
            return 0
        if not args.out:
            raise ValueError('--out is required')
        tiles = read_tiles(args.root, args.group_column)
        prefer = read_prefer_train(args.root, args.prefer_train_column)
        split = make_split(tiles, args.scheme, args.test_groups, args.val_frac, args.test_frac,
                           args.seed, args.train_only, prefer)
        write_split(args.out, split, tiles,
                    dict(dataset=osp.basename(osp.normpath(args.root)), scheme=args.scheme,
                         test_groups=args.test_groups, val_frac=args.val_frac,
                         seed=args.seed, train_only=args.train_only))
        print(f'{args.out}: ' + ', '.join(f'{k} {len(v)}' for k, v in split.items()))
    except (ValueError, FileNotFoundError) as e:
        print(f'make_real_splits.py: error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
