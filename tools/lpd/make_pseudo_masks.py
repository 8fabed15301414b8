"""Pseudo masks from a trained LPD (or plain CAM) model, optionally scored against masks.

For every image of a split: CAMs -> (TTA) -> stage fusion -> background score -> (dense CRF) ->
argmax, written as palette PNGs ``<out-dir>/<image path relative to data_root, .png>`` holding class
indices (background = last class). These are the training masks of stage 2
(``configs/lpd/stage2_*.py``). If the split has ground-truth masks, the benchmark metric
(:class:`WSSSIoUMetric`: dataset-level matrix with background, mean over tissue classes) is printed
and written to ``<out-dir>/metrics.json``; ``--bg-powers`` scores several background exponents
from one forward pass (choose on the val split, apply on test).

Examples::

    python tools/lpd/make_pseudo_masks.py configs/lpd/lpd_mit-b0_demo-cpu_ebhi.py CKPT \
        --split train --out-dir work_dirs/lpd_pseudo_masks
    python tools/lpd/make_pseudo_masks.py CONFIG CKPT --split val --bg-powers 2 4 6 10 --no-write
    python tools/lpd/make_pseudo_masks.py CONFIG CKPT --split test --bg-power 6 --tta --crf
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import List, Optional

import numpy as np


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='LPD pseudo masks (+ evaluation)')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='train',
                        help='which dataloader of the config provides data_root / split '
                        '(train uses the test pipeline on the train split)')
    parser.add_argument('--data-root', help='override data_root')
    parser.add_argument('--split-file', help='override split_file (ImageLabelFolderDataset)')
    parser.add_argument('--out-dir', help='where to write masks and metrics.json')
    parser.add_argument('--no-write', action='store_true', help='only evaluate')
    parser.add_argument('--tta', action='store_true', help='6 views: h-flip x (0.9, 1.0, 1.1)')
    parser.add_argument('--crf', action='store_true', help='dense CRF (pydensecrf2)')
    parser.add_argument('--bg-power', type=float, help='background exponent (default: config)')
    parser.add_argument('--bg-powers', type=float, nargs='+',
                        help='score several exponents (no CRF); masks use --bg-power')
    parser.add_argument('--pred-labels', action='store_true',
                        help='gate CAMs with predicted instead of given image labels')
    parser.add_argument('--limit', type=int, help='first N images only')
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='key=value config overrides (as tools/train.py)')
    return parser.parse_args(argv)


def build(args):
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmseg.registry import DATASETS, MODELS

    import protocal  # noqa: F401
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    test_cfg = dict(cfg.model.get('test_cfg') or {})
    test_cfg.update(tta=args.tta, crf=True if args.crf else None)
    if args.bg_power is not None:
        test_cfg['bg_power'] = args.bg_power
    if args.pred_labels:
        test_cfg['use_gt_labels'] = False
    cfg.model.test_cfg = test_cfg
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()

    loader = cfg.get(f'{args.split}_dataloader')
    ds_cfg = dict(loader['dataset'])
    # images of any split go through the test pipeline (no augmentation); masks if they exist
    ds_cfg['pipeline'] = cfg.test_dataloader.dataset.pipeline
    if ds_cfg.get('type') == 'ImageLabelFolderDataset':
        ds_cfg['mask_name'] = cfg.test_dataloader.dataset.get('mask_name', 'mask.png')
        ds_cfg['seg_map_root'] = None
    if args.data_root:
        ds_cfg['data_root'] = args.data_root
    if args.split_file:
        ds_cfg['split_file'] = args.split_file
    dataset = DATASETS.build(ds_cfg)
    torch.set_grad_enabled(False)
    return cfg, model, dataset


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if not args.no_write and not args.out_dir:
        raise SystemExit('--out-dir is required unless --no-write')
    import torch
    from PIL import Image

    from protocal.evaluation.metrics.wsss_iou_metric import confusion_matrix, wsss_scores
    from protocal.models.segmentors.wsss_postprocess import add_background
    cfg, model, dataset = build(args)
    classes = list(dataset.metainfo['classes'])
    palette = np.array(dataset.metainfo['palette'], dtype=np.uint8).reshape(-1)
    num = len(classes)
    powers = args.bg_powers or []
    hists = {p: np.zeros((num, num), np.int64) for p in powers}
    hist = np.zeros((num, num), np.int64)
    has_gt = False
    root = dataset.data_root or ''
    count, start = 0, time.perf_counter()
    for idx in range(len(dataset)):
        if args.limit is not None and idx >= args.limit:
            break
        item = dataset[idx]
        data = model.data_preprocessor(dict(inputs=[item['inputs']],
                                            data_samples=[item['data_samples']]), False)
        sample = model.predict(data['inputs'], data['data_samples'])[0]
        pred = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
        gt = sample.get('gt_sem_seg')
        if gt is not None:
            has_gt = True
            gt_np = gt.data[0].cpu().numpy()
            hist += confusion_matrix(pred, gt_np, num)
            if powers:
                fused = model.class_activation_maps(data['inputs'], data['data_samples'])
                meta = sample.metainfo
                for p in powers:
                    probs = add_background(fused, p)
                    probs = torch.nn.functional.interpolate(probs, size=meta['ori_shape'],
                                                            mode='bilinear', align_corners=False)
                    hists[p] += confusion_matrix(probs[0].argmax(0).numpy(), gt_np, num)
        if not args.no_write:
            rel = osp.splitext(osp.relpath(sample.metainfo['img_path'], root))[0] + '.png'
            path = osp.join(args.out_dir, rel)
            os.makedirs(osp.dirname(path), exist_ok=True)
            img = Image.fromarray(pred, mode='P')
            img.putpalette(palette.tolist())
            img.save(path)
        count += 1
    elapsed = time.perf_counter() - start
    result = dict(images=count, seconds=round(elapsed, 2),
                  images_per_s=round(count / max(elapsed, 1e-9), 3), tta=args.tta, crf=args.crf,
                  bg_power=model.test_cfg['bg_power'], split=args.split)
    if has_gt:
        scores = wsss_scores(hist)
        result.update(mIoU=round(scores['mIoU'] * 100, 2), mDice=round(scores['mDice'] * 100, 2),
                      FwIoU=round(scores['FwIoU'] * 100, 2),
                      per_class={c: dict(IoU=round(float(scores['iou'][i]) * 100, 2),
                                         Dice=round(float(scores['dice'][i]) * 100, 2))
                                 for i, c in enumerate(classes)})
        if powers:
            result['bg_power_sweep'] = {
                str(p): dict(mIoU=round(wsss_scores(h)['mIoU'] * 100, 2),
                             mDice=round(wsss_scores(h)['mDice'] * 100, 2))
                for p, h in hists.items()
            }
    print(json.dumps(result, indent=1))
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        with open(osp.join(args.out_dir, 'metrics.json'), 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main(sys.argv[1:])
