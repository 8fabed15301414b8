#!/usr/bin/env python
"""Detection quality of a trained point detector as a function of the probability threshold.

Runs the model once per image of the config's test split (or ``--split val``), keeps the
probability maps, then decodes them with the codec at every threshold of ``--thrs`` and scores
each with the config's evaluator (``PointF1Metric``). Use it to choose the per-class thresholds
of a new dataset on its validation split, or to compare losses independently of a threshold.

Example::

    python tools/analysis_tools/threshold_sweep.py configs/pcl/pcl_r18-fpn_40e_ihc-demo-10pct.py \
        work_dirs/pcl/epoch_40.pth --thrs 0.05 0.1 0.2 0.3 0.5 --out sweep.json
"""
import argparse
import copy
import json
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--split', choices=['test', 'val'], default='test',
                        help='which dataloader of the config to evaluate')
    parser.add_argument('--thrs', type=float, nargs='+', default=[0.05, 0.1, 0.2, 0.3, 0.5, 0.7])
    parser.add_argument('--keys', nargs='+',
                        default=['point/det_f1', 'point/det_recall', 'point/mF1',
                                 'point/unannotated_recall'],
                        help='metrics to print')
    parser.add_argument('--out', help='write all metrics per threshold to this JSON file')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


def sweep(config: str, checkpoint: str, thrs, split: str = 'test', device: str = 'cpu'):
    """``{thr: metrics}`` for every threshold (one forward pass per image)."""
    import torch
    from mmdet.registry import DATASETS, METRICS, TASK_UTILS
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from protocal.apis import init_point_detector

    model = init_point_detector(config, checkpoint, device=device,
                                cfg_options={'model.head.test_cfg.return_heatmap': False})
    cfg = model.cfg
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(copy.deepcopy(cfg[f'{split}_dataloader'])['dataset'])
    evaluator_cfg = cfg[f'{split}_evaluator']
    evaluator_cfg = evaluator_cfg[0] if isinstance(evaluator_cfg, (list, tuple)) else evaluator_cfg
    cached = []  # (logits, data sample): one forward pass per image
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
            logits, _ = model.head(model.extract_feat(batch['inputs']))
            cached.append((logits.cpu(), batch['data_samples'][0]))
    results = {}
    for thr in thrs:
        codec_cfg = copy.deepcopy(cfg.model.head.codec)
        codec_cfg.update(score_thr=thr, num_classes=cfg.model.head.num_classes)
        model.head.codec = TASK_UTILS.build(codec_cfg)  # the head decodes as at test time
        metric = METRICS.build(copy.deepcopy(evaluator_cfg))
        metric.dataset_meta = dataset.metainfo
        for logits, sample in cached:
            out = sample.clone()
            out.pred_instances = model.head.predict_by_feat(logits, [out])[0][0]
            metric.process({}, [out.to_dict()])
        results[thr] = metric.evaluate(len(cached))
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    results = sweep(args.config, args.checkpoint, args.thrs, args.split, args.device)
    width = max(len(k) for k in args.keys)
    print('thr    ' + '  '.join(k.rjust(width) for k in args.keys))
    for thr, metrics in results.items():
        print(f'{thr:<6.3g} ' + '  '.join(f'{metrics.get(k, float("nan")):{width}.3f}'
                                          for k in args.keys))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({str(t): m for t, m in results.items()}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
