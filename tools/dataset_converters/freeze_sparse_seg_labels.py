#!/usr/bin/env python
"""Freeze the sparse segmentation labels a config derives on the fly (points / scribbles / blocks).

``GenerateSparseLabels`` is already reproducible (seeded by ``seed`` and the sample name); freezing
writes the maps down so other code bases, other methods or a publication use exactly the same
labels. For every sample of the config's training set the pipeline is run up to and including
``GenerateSparseLabels`` (crops and packing are skipped) and ``OUT_DIR/<sample id>.png`` is written:
uint8, class index on labelled pixels, 255 (``ignore_index``) elsewhere. ``OUT_DIR/manifest.csv``
lists ``id,labelled_px,px_class0,px_class1,...,sha256``.

Train on the frozen labels with::

    python tools/train.py CONFIG --cfg-options \\
        train_dataloader.dataset.sparse_template=/abs/path/OUT_DIR/{id}.png

(``LoadSparseSegAnnotations`` then reads them and ``GenerateSparseLabels`` keeps them.)

Example::

    python tools/dataset_converters/freeze_sparse_seg_labels.py \\
        configs/procns/procns_unet_600it_dsb2018-he_point.py work_dirs/frozen/dsb_point
"""
import argparse
import copy
import csv
import hashlib
import os
import os.path as osp
import sys
from typing import List, Optional

import numpy as np

WRAPPERS = ('RepeatDataset', 'ClassBalancedDataset')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='training config with a GenerateSparseLabels transform')
    parser.add_argument('out_dir', help='output folder')
    parser.add_argument('--dataloader', default='train_dataloader',
                        help='which dataloader of the config to freeze (default train_dataloader)')
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='config overrides key=value (as in tools/train.py)')
    return parser.parse_args(argv)


def truncated_pipeline(pipeline: list) -> list:
    """The pipeline up to and including GenerateSparseLabels."""
    out = []
    for step in pipeline:
        out.append(step)
        if isinstance(step, dict) and step.get('type') == 'GenerateSparseLabels':
            return out
    raise ValueError('the pipeline has no GenerateSparseLabels transform: nothing to freeze')


def freeze(cfg, out_dir: str, loader_key: str = 'train_dataloader') -> int:
    """Write the sparse maps of every sample; returns the number of files written."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    from PIL import Image
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    ds_cfg = copy.deepcopy(cfg[loader_key]['dataset'])
    while ds_cfg.get('type') in WRAPPERS:
        ds_cfg = ds_cfg['dataset']
    ds_cfg['pipeline'] = truncated_pipeline(ds_cfg['pipeline'])
    dataset = DATASETS.build(ds_cfg)
    num_classes = len(dataset.metainfo['classes'])
    rows = []
    for i in range(len(dataset)):
        results = dataset[i]
        sparse = np.asarray(results['gt_seg_map'], dtype=np.uint8)
        name = str(results.get('sample_id') or osp.splitext(osp.basename(results['img_path']))[0])
        path = osp.join(out_dir, f'{name}.png')
        os.makedirs(osp.dirname(path), exist_ok=True)
        Image.fromarray(sparse).save(path)
        with open(path, 'rb') as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        counts = [int((sparse == c).sum()) for c in range(num_classes)]
        rows.append([name, int(sum(counts)), *counts, digest])
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'manifest.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['id', 'labelled_px', *[f'px_class{c}' for c in range(num_classes)],
                         'sha256'])
        writer.writerows(rows)
    return len(rows)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    import protocal  # noqa: F401  (registers the transforms)
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    n = freeze(cfg, args.out_dir, args.dataloader)
    print(f'wrote {n} sparse label maps and manifest.csv to {args.out_dir}')


if __name__ == '__main__':
    main(sys.argv[1:])
