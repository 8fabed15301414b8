"""Turn any point dataset into the folder counting format (images + ``counts.csv``).

The MIL configs can read point datasets directly (``PointCountDataset``); this tool writes the
standalone folder variant (``CountFolderDataset``) instead, e.g. to share counts without points.

Usage::

    python tools/mil/points_to_counts.py --type EndoNukePointDataset \
        --data-root /path/to/endonuke --split-file data/real/splits/endonuke_block.json \
        --split train --classes epithelium --out data/endonuke_epi_counts/train

writes ``OUT/images/<id>.png`` (copies) and ``OUT/counts.csv`` (``filename,count``).
Any extra ``--arg key=value`` is passed to the point dataset (values parsed as JSON when possible).
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--type', required=True, help='point dataset type, e.g. EndoNukePointDataset')
    p.add_argument('--data-root', required=True)
    p.add_argument('--split-file', default=None)
    p.add_argument('--split', default=None)
    p.add_argument('--classes', nargs='+', default=None, help='count only these classes')
    p.add_argument('--arg', nargs='*', default=[], help='extra dataset arguments key=value')
    p.add_argument('--out', required=True)
    args = p.parse_args(argv)
    import protocal  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    pcfg = dict(type=args.type, data_root=args.data_root)
    if args.split_file:
        pcfg['split_file'] = args.split_file
    if args.split:
        pcfg['split'] = args.split
    for kv in args.arg:
        k, v = kv.split('=', 1)
        try:
            v = json.loads(v)
        except ValueError:
            pass
        pcfg[k] = v
    ds = DATASETS.build(dict(type='PointCountDataset', points_dataset=pcfg,
                             count_classes=args.classes, keep_points=False, pipeline=[]))
    os.makedirs(osp.join(args.out, 'images'), exist_ok=True)
    with open(osp.join(args.out, 'counts.csv'), 'w') as f:
        f.write('filename,count\n')
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            name = f'{info["img_id"]}{osp.splitext(info["img_path"])[1]}'
            shutil.copyfile(info['img_path'], osp.join(args.out, 'images', name))
            f.write(f'{name},{info["gt_count"]}\n')
    print(f'wrote {len(ds)} images and counts to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
