"""Freeze the sparse annotated subset of a point dataset into per-image CSV files.

``SparsePointSampling`` draws the subset from ``crc32(f'{seed}:{image file name}')``, so it is
already reproducible; freezing writes it down so that other code bases, other ratios' nested
experiments or a published split can use exactly the same annotated points. Output files are
``OUT_DIR/<image stem>.csv`` with ``x,y,class,annotated`` (class names), which every
``PointDataset`` reads back (the ``annotated`` column marks the sample ``sparse_frozen`` and
``SparsePointSampling(respect_existing=True)`` then leaves it alone). With ``--only-annotated``
only the annotated points are written (no ``annotated`` column): a dataset that *is* the sparse
subset, for tools that do not know about flags.

The points written are the points the dataset keeps (NaN / out-of-image points and classes mapped
to ``None`` are already dropped).

From a config (ratio, seed, mode taken from its ``SparsePointSampling`` unless overridden)::

    python tools/dataset_converters/freeze_sparse_subset.py \\
        configs/sel/sel_vig-s_500e_her2-10pct.py data/her2/ground_truth_10pct/train

From folders::

    python tools/dataset_converters/freeze_sparse_subset.py --data-root data/my_cells \\
        --img-prefix images/train --ann-prefix annotations/train --classes tumor other \\
        --ratio 0.1 --seed 0 data/my_cells/annotations/train_10pct
"""
import argparse
import os.path as osp
import sys
from typing import Any, Dict, Optional

import numpy as np


def _find_sampling(pipeline) -> Optional[dict]:
    for t in pipeline or []:
        if isinstance(t, dict) and t.get('type') in ('SparsePointSampling',
                                                     'mmdet.SparsePointSampling'):
            return dict(t)
    return None


def _dataset_cfg_from_config(config: str, key: str, cfg_options: Optional[dict]) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if key not in cfg:
        raise KeyError(f'{config} has no {key!r}')
    ds = cfg[key]['dataset'] if 'dataset' in cfg[key] else cfg[key]
    while 'pipeline' not in ds and 'dataset' in ds:  # unwrap RepeatDataset & co.
        ds = ds['dataset']
    return ds.to_dict() if hasattr(ds, 'to_dict') else dict(ds)


def freeze(dataset, sampling: Dict[str, Any], out_dir: str, only_annotated: bool = False
           ) -> Dict[str, int]:
    """Apply ``SparsePointSampling(**sampling)`` to every sample of ``dataset`` and write CSVs.

    Returns counts ``files``, ``points`` and ``annotated``.
    """
    from protocal.datasets.annotation_io import write_csv_points
    from protocal.datasets.transforms import SparsePointSampling

    sampler = SparsePointSampling(**sampling)
    classes = dataset.metainfo['classes']
    stats = dict(files=0, points=0, annotated=0)
    seen = set()
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        results = sampler(dict(info))
        flags = np.asarray(results['gt_points_annotated'], bool)
        stem = osp.splitext(osp.basename(info['img_path']))[0]
        if stem in seen:
            raise ValueError(f'two images share the stem {stem!r}; cannot write one CSV per image')
        seen.add(stem)
        points, labels = info['gt_points'], info['gt_points_labels']
        names = [classes[int(i)] for i in labels]
        if only_annotated:
            write_csv_points(
                osp.join(out_dir, stem + '.csv'), points[flags], [n for n, f in zip(names, flags)
                                                                  if f])
        else:
            write_csv_points(osp.join(out_dir, stem + '.csv'), points, names, flags)
        stats['files'] += 1
        stats['points'] += len(labels)
        stats['annotated'] += int(flags.sum())
    return stats


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='write the sparse annotated subset of a point dataset to CSV files',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__)
    parser.add_argument('config', nargs='?', help='config file (omit with --data-root)')
    parser.add_argument('out_dir', help='output folder for <stem>.csv files')
    parser.add_argument(
        '--split', default='train_dataloader',
        help='config key of the dataloader whose dataset is frozen (default: train_dataloader)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. train_dataloader.dataset.data_root=data/x')
    parser.add_argument('--data-root', help='folder mode: dataset root')
    parser.add_argument('--img-prefix', default='images/train', help='folder mode: image folder')
    parser.add_argument(
        '--ann-prefix', default='annotations/train', help='folder mode: annotation folder')
    parser.add_argument('--ann-format', default='auto', choices=('auto', 'csv', 'geojson'))
    parser.add_argument('--classes', nargs='+', help='folder mode: class names')
    parser.add_argument(
        '--class-id-base', type=int, default=1,
        help='folder mode: integer id of the first class in the files (default 1)')
    parser.add_argument('--ratio', type=float, help='fraction of points to annotate')
    parser.add_argument('--seed', type=int, help='sampling seed (default: config or 0)')
    parser.add_argument('--mode', choices=('bernoulli', 'fixed_count', 'exp_threshold'))
    parser.add_argument(
        '--no-keep-first', action='store_true', help='do not force the first point of each class')
    parser.add_argument(
        '--resample', action='store_true',
        help='re-sample samples whose subset is already frozen (respect_existing=False)')
    parser.add_argument(
        '--only-annotated', action='store_true',
        help='write only the annotated points, without the annotated column')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import protocal  # noqa: F401  (registers the datasets and transforms)
    from mmengine.registry import init_default_scope
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')

    if (args.config is None) == (args.data_root is None):
        raise SystemExit('give either a config file or --data-root (folder mode)')
    if args.config is not None:
        ds_cfg = _dataset_cfg_from_config(args.config, args.split, args.cfg_options)
        sampling = _find_sampling(ds_cfg.get('pipeline')) or {}
        sampling.pop('type', None)
        ds_cfg['pipeline'] = []
        ds_cfg['lazy_init'] = False
    else:
        if not args.classes:
            raise SystemExit('folder mode needs --classes')
        ds_cfg = dict(
            type='PointDataset',
            data_root=args.data_root,
            data_prefix=dict(img=args.img_prefix, ann=args.ann_prefix),
            ann_format=args.ann_format,
            metainfo=dict(classes=tuple(args.classes)),
            class_id_base=args.class_id_base)
        sampling = {}
    for key in ('ratio', 'seed', 'mode'):
        if getattr(args, key) is not None:
            sampling[key] = getattr(args, key)
    if args.no_keep_first:
        sampling['keep_first_per_class'] = False
    if args.resample:
        sampling['respect_existing'] = False
    if 'ratio' not in sampling:
        raise SystemExit('no ratio: the config has no SparsePointSampling; pass --ratio')
    dataset = DATASETS.build(ds_cfg)
    stats = freeze(dataset, sampling, args.out_dir, args.only_annotated)
    frac = stats['annotated'] / max(stats['points'], 1)
    print(f'wrote {stats["files"]} files to {args.out_dir}: {stats["annotated"]} of '
          f'{stats["points"]} points annotated ({frac:.1%}) with {sampling}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
