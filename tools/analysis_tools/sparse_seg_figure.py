#!/usr/bin/env python
"""Figure of sparse-label segmentation results: image, sparse labels, predictions, ground truth.

For the first ``--num`` images of a config's test split: the image, the sparse labels the config's
generator derives for it (as they would look for training; the test images are never trained on),
the prediction of every ``--model NAME CONFIG CHECKPOINT`` and the expert mask.

    python tools/analysis_tools/sparse_seg_figure.py OUT.png --num 3 \\
        --model pCE configs/procns/baselines/pce_unet-c8_300it_dsb2018-he_point.py W1/best.pth \\
        --model ProCNS configs/procns/procns_unet-c8_300it_dsb2018-he_point.py W2/best.pth
"""
import argparse
import copy
import sys

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='output PNG')
    parser.add_argument('--model', nargs=3, action='append', required=True,
                        metavar=('NAME', 'CONFIG', 'CHECKPOINT'))
    parser.add_argument('--num', type=int, default=3, help='number of test images')
    parser.add_argument('--ids', nargs='*', help='sample ids to show instead of the first --num')
    parser.add_argument('--title', default='')
    parser.add_argument('--dpi', type=int, default=55)
    return parser.parse_args(argv)


def sparse_for(cfg, dataset, index):
    """Sparse labels of a test image from the config's training generator."""
    from mmcv.transforms import Compose
    info = copy.deepcopy(dataset.get_data_info(index))
    steps = []
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'SparseSegRandomCrop':
            break
        steps.append(step)
    return Compose(steps)(info)['gt_seg_map']


def main(argv=None):
    args = parse_args(argv)
    import protocal  # noqa: F401
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmseg.registry import DATASETS, MODELS

    with DefaultScope.overwrite_default_scope('mmseg'):
        cfg0 = Config.fromfile(args.model[0][1])
        dataset = DATASETS.build(cfg0.test_dataloader.dataset)
        ids = [dataset.get_data_info(i)['sample_id'] for i in range(len(dataset))]
        chosen = ([ids.index(i) for i in args.ids] if args.ids else
                  list(range(min(args.num, len(dataset)))))
        models = []
        for name, config, ckpt in args.model:
            cfg = Config.fromfile(config)
            model = MODELS.build(cfg.model)
            load_checkpoint(model, ckpt, map_location='cpu')
            models.append((name, model.eval()))
        cols = 3 + len(models)
        fig, axes = plt.subplots(len(chosen), cols, figsize=(2.6 * cols, 2.3 * len(chosen)),
                                 squeeze=False)
        for row, index in enumerate(chosen):
            data = dataset[index]
            image = data['inputs'].permute(1, 2, 0).numpy()[..., ::-1]
            gt = data['data_samples'].gt_sem_seg.data[0].numpy()
            sparse = sparse_for(cfg0, dataset, index)
            panels = [('image', image, None), ('sparse labels', image, sparse)]
            for name, model in models:
                with torch.no_grad():
                    pred = model.test_step(pseudo_collate([data]))[0].pred_sem_seg.data[0]
                dice = 2 * ((pred.numpy() == 1) & (gt == 1)).sum() / max(
                    (pred.numpy() == 1).sum() + (gt == 1).sum(), 1)
                panels.append((f'{name} (Dice {dice:.2f})', None, pred.numpy()))
            panels.append(('expert mask', None, gt))
            for col, (title, img, labels) in enumerate(panels):
                ax = axes[row, col]
                if img is not None:
                    ax.imshow(img)
                if labels is not None and img is not None:  # sparse overlay
                    overlay = np.zeros((*labels.shape, 4))
                    overlay[labels == 1] = (1, 0.1, 0.1, 1)
                    overlay[labels == 0] = (0.1, 0.4, 1, 1)
                    ax.imshow(overlay)
                elif labels is not None:
                    ax.imshow(labels == 1, cmap='gray', vmin=0, vmax=1)
                ax.set_title(title if row == 0 or col >= 2 else '', fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row, 0].set_ylabel(str(ids[index])[-14:], fontsize=7)
        if args.title:
            fig.suptitle(args.title, fontsize=9)
        fig.tight_layout()
        fig.savefig(args.out, dpi=args.dpi)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main(sys.argv[1:])
