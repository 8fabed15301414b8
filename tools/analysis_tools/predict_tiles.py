#!/usr/bin/env python
"""Predict every tile of a split of a config's dataset: CSV, QuPath GeoJSON and overlays.

Unlike ``tools/infer.py`` (plain image files, named by file stem) this runs on the dataset of a
config, so it works with tile-folder datasets whose images are all called ``image.png``
(``EndoNukePointDataset``, ``DSB2018PointDataset``): outputs are named after the tile id. The
overlays show the ground truth too: true positives (green ring), false positives (red cross) and
missed cells (yellow ring) by the matching of the config's metric, at the metric's radius (stated
in the legend), drawn ``--upscale`` times larger (nearest neighbour).

Writes, for every tile ``<id>`` of ``--split``:

* ``<id>.csv``: ``x,y,class,class_name,score``;
* ``<id>.geojson``: the same points for QuPath (*File > Import objects*);
* ``<id>_overlay.png``: the overlay;

and ``metrics.json`` (the config's metric on the split at the threshold used).

Example (the demo)::

    python tools/analysis_tools/predict_tiles.py configs/pcl/pcl_r18-fpn_20e_endonuke-10pct.py \\
        work_dirs/demo/pcl/epoch_20.pth --split test --score-thr 0.2 --out-dir work_dirs/demo/pcl/predictions
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--split', default='test', help='split of the test dataloader\'s dataset')
    parser.add_argument('--score-thr', type=float, default=None,
                        help='decoding threshold (default: the config\'s)')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--upscale', type=int, default=4)
    parser.add_argument('--max-overlays', type=int, default=None,
                        help='write overlays for the first N tiles only')
    parser.add_argument('--heatmap', action='store_true', help='blend the probability map in')
    return parser.parse_args(argv)


def predict_split(config, checkpoint, split='test', score_thr=None, out_dir=None, upscale=4,
                  max_overlays=None, heatmap=False, dataset_overrides=None):
    """Run the model on every tile of ``split``; returns (metrics, per-tile predictions)."""
    import mmcv
    import torch
    from mmdet.registry import DATASETS, METRICS
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from protocal.apis import (init_point_detector, test_metric_cfg, write_points_csv,
                               write_qupath_geojson)
    from protocal.visualization import draw_points_overlay

    options = {'model.head.test_cfg.return_heatmap': bool(heatmap)}
    if score_thr is not None:
        options['model.head.codec.score_thr'] = float(score_thr)
    model = init_point_detector(config, checkpoint, device='cpu', cfg_options=options)
    cfg = model.cfg
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg['split'] = split
    ds_cfg.update(dataset_overrides or {})
    dataset = DATASETS.build(ds_cfg)
    evaluator_cfg = test_metric_cfg(cfg)
    metric = METRICS.build(copy.deepcopy(evaluator_cfg))
    metric.dataset_meta = dataset.metainfo
    classes = list(dataset.metainfo['classes'])
    palette = dataset.metainfo.get('palette')
    radius = float(evaluator_cfg.get('radius', 15.0))
    method = {'ocelot': 'greedy', 'hungarian': 'hungarian'}.get(evaluator_cfg.get('mode'),
                                                               'bipartite')
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    predictions = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            data = pseudo_collate([dataset[i]])
            sample = model.test_step(data)[0]
            metric.process({}, [sample.to_dict()])
            img_id = str(sample.metainfo.get('img_id', i))
            pred = sample.pred_instances
            pts = pred.points.cpu().numpy()
            labels = pred.labels.cpu().numpy()
            scores = pred.scores.cpu().numpy()
            predictions[img_id] = dict(points=pts, labels=labels, scores=scores)
            if not out_dir:
                continue
            write_points_csv(osp.join(out_dir, f'{img_id}.csv'), pts, labels, scores, classes)
            write_qupath_geojson(osp.join(out_dir, f'{img_id}.geojson'), pts, labels, scores,
                                 classes, palette=palette)
            if max_overlays is None or i < max_overlays:
                h, w = sample.metainfo['img_shape'][:2]
                image = mmcv.imread(sample.metainfo['img_path'], channel_order='rgb')[:h, :w]
                gt = sample.gt_instances
                hm = sample.pred_heatmap.data.cpu().numpy() if 'pred_heatmap' in sample else None
                overlay = draw_points_overlay(
                    image, pred=dict(points=pts, labels=labels, scores=scores),
                    gt=dict(points=gt.points.numpy(), labels=gt.labels.numpy()),
                    classes=classes, palette=palette, radius=radius, match_method=method,
                    heatmap=hm, upscale=upscale)
                mmcv.imwrite(overlay[..., ::-1], osp.join(out_dir, f'{img_id}_overlay.png'))
    metrics = {k.split('/', 1)[-1]: float(v) for k, v in metric.evaluate(len(dataset)).items()}
    metrics['score_thr'] = float(model.head.codec.score_thr[0]
                                 if hasattr(model.head.codec.score_thr, '__len__')
                                 else model.head.codec.score_thr)
    if out_dir:
        with open(osp.join(out_dir, 'metrics.json'), 'w') as f:
            json.dump(metrics, f, indent=1, sort_keys=True)
    return metrics, predictions


def main(argv=None) -> int:
    args = parse_args(argv)
    metrics, predictions = predict_split(args.config, args.checkpoint, args.split,
                                         args.score_thr, args.out_dir, args.upscale,
                                         args.max_overlays, args.heatmap)
    n = sum(len(p['points']) for p in predictions.values())
    print(f'{len(predictions)} tiles, {n} cells predicted; CSV, GeoJSON and overlays in '
          f'{osp.abspath(args.out_dir)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
