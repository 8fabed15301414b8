"""Figure: image | CAM of every class | pseudo masks of one or more models | ground truth.

The CAM columns show the fused, min-max normalised class maps of the first model **without**
label gating (every class drawn), so one sees whether the right class lights up where the tissue
is; the pseudo-mask columns use the evaluation protocol (gated by the image label, background
score, no CRF unless --crf).

Example::

    python tools/lpd/plot_cams.py --models LPD:CFG:CKPT CAM:CFG2:CKPT2 --split test \
        --per-class 1 --out configs/lpd/ebhi_cams.png
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', required=True, help='NAME:CONFIG:CHECKPOINT')
    parser.add_argument('--split', default='test', choices=['train', 'val', 'test'])
    parser.add_argument('--data-root')
    parser.add_argument('--split-file')
    parser.add_argument('--per-class', type=int, default=1, help='images per class')
    parser.add_argument('--bg-power', type=float)
    parser.add_argument('--out', required=True)
    parser.add_argument('--dpi', type=int, default=70)
    args = parser.parse_args(argv)

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import torch

    from make_pseudo_masks import build  # noqa: E402  (same folder)

    models = []
    for spec in args.models:
        name, config, ckpt = spec.split(':', 2)
        ns = argparse.Namespace(config=config, checkpoint=ckpt, split=args.split, tta=False,
                                crf=False, bg_power=args.bg_power, pred_labels=False,
                                cfg_options=None, data_root=args.data_root,
                                split_file=args.split_file)
        cfg, model, dataset = build(ns)
        models.append((name, model, dataset))
    dataset = models[0][2]
    classes = list(dataset.metainfo['classes'])
    palette = np.array(dataset.metainfo['palette'], dtype=np.uint8)
    chosen, seen = [], {}
    for idx in range(len(dataset)):
        label = dataset.get_data_info(idx)['gt_cls_label']
        key = int(np.argmax(label))
        if seen.get(key, 0) < args.per_class:
            seen[key] = seen.get(key, 0) + 1
            chosen.append(idx)
    fg = len(classes) - 1
    cols = 1 + fg + len(models) + 1
    fig, axes = plt.subplots(len(chosen), cols, figsize=(1.6 * cols, 1.6 * len(chosen)))
    axes = np.atleast_2d(axes)
    for r, idx in enumerate(chosen):
        item = dataset[idx]
        img = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR -> RGB
        axes[r, 0].imshow(img)
        for m, (name, model, _) in enumerate(models):
            data = model.data_preprocessor(dict(inputs=[item['inputs']],
                                                data_samples=[item['data_samples']]), False)
            if m == 0:
                ones = [s.clone() for s in data['data_samples']]
                for s in ones:
                    s.set_field(torch.ones(fg), 'gt_cls_label')
                cams = model.class_activation_maps(data['inputs'], ones)[0].numpy()
                for c in range(fg):
                    axes[r, 1 + c].imshow(img)
                    axes[r, 1 + c].imshow(cams[c], cmap='jet', alpha=0.5, vmin=0, vmax=1)
            pred = model.predict(data['inputs'], data['data_samples'])[0]
            mask = pred.pred_sem_seg.data[0].numpy()
            axes[r, 1 + fg + m].imshow(palette[mask])
        gt = item['data_samples'].gt_sem_seg.data[0].numpy()
        axes[r, -1].imshow(palette[gt])
    titles = ['image'] + [f'CAM {c}' for c in classes[:-1]] + [
        f'{n} pseudo' for n, _, _ in models] + ['GT']
    for c, t in enumerate(titles):
        axes[0, c].set_title(t, fontsize=7)
    for ax in axes.reshape(-1):
        ax.set_xticks([])
        ax.set_yticks([])
    for r, idx in enumerate(chosen):
        axes[r, 0].set_ylabel(classes[int(np.argmax(dataset.get_data_info(idx)['gt_cls_label']))],
                              fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=args.dpi)
    from PIL import Image  # 8-bit palette PNG: a small file for the README
    Image.open(args.out).convert('RGB').quantize(colors=128).save(args.out, optimize=True)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main(sys.argv[1:])
