"""Per-epoch adaptive top-k tile selection for the MIL tile classifier (stage 2)."""
import logging
from typing import Dict

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS
from .tiling import balance_selection

__all__ = ['MILTopKSamplingHook']


@HOOKS.register_module()
class MILTopKSamplingHook(Hook):
    """Before every training epoch: score all tiles of the training set (unshuffled, fixed tile
    order), select the adaptive top-k, balance positives : negatives and give the selection to
    :class:`~protocal.models.mil.MILTileClassifier`.

    The training pipeline of stage 2 must be deterministic (no random flips / crops), because the
    selection is computed on the images the pipeline returns.

    Counted warnings: the number of images whose ``count * k_per_pos`` exceeds the number of
    tiles (top-k clamped to all tiles); no zero-count image (no negatives) or no positive image.

    Args:
        batch_size: images scored per forward pass.
    """

    priority = 'NORMAL'

    def __init__(self, batch_size: int = 8) -> None:
        self.batch_size = int(batch_size)

    def before_train_epoch(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        dataset = runner.train_dataloader.dataset
        selection = self.compute_selection(model, dataset, runner.epoch)
        model.set_tile_selection(selection)

    @torch.no_grad()
    def compute_selection(self, model, dataset, epoch: int = 0) -> Dict:
        keys, picks, clamped, n_zero = [], [], 0, 0
        for start in range(0, len(dataset), self.batch_size):
            items = [dataset[i] for i in range(start, min(start + self.batch_size, len(dataset)))]
            data = model.data_preprocessor(pseudo_collate(items), False)
            samples = data['data_samples']
            counts = []
            for s in samples:
                if getattr(s, 'gt_count', None) is None:
                    raise ValueError(f'MILTopKSamplingHook: image {s.metainfo.get("img_id")!r} '
                                     'has no count')
                counts.append(int(s.gt_count.item()))
            probs, _ = model.score_tiles(data['inputs'])
            sel, cl = model.select_tiles(probs, counts)
            clamped += cl
            n_zero += sum(c == 0 for c in counts)
            for s, p in zip(samples, sel):
                key = s.metainfo.get('img_id')
                if key in keys:
                    raise ValueError(f'MILTopKSamplingHook: duplicate img_id {key!r} in the '
                                     'training set; ids key the tile selection')
                keys.append(key)
                picks.append(p)
        labels = np.concatenate([p[1] for p in picks]) if picks else np.zeros(0, np.int64)
        n_pos_img = len(keys) - n_zero
        if n_zero == 0 or n_pos_img == 0:
            print_log(f'MILTopKSamplingHook: {n_zero} zero-count and {n_pos_img} positive images '
                      'in the training set; the tile classifier needs both (hard negatives come '
                      'only from zero-count images), no balancing is possible', logger='current',
                      level=logging.WARNING)
        if clamped:
            print_log(f'MILTopKSamplingHook: {clamped} image(s) have count * k_per_pos larger '
                      'than their number of tiles; top-k clamped to all tiles', logger='current',
                      level=logging.WARNING)
        rng = np.random.default_rng([int(getattr(model, 'seed', 0)), int(epoch)])
        keep = balance_selection(labels, getattr(model, 'pos_neg_ratio', 0.5), rng)
        selection, start = {}, 0
        for key, (idx, lab) in zip(keys, picks):
            k = keep[start:start + len(idx)]
            selection[key] = (idx[k], lab[k])
            start += len(idx)
        print_log(f'MILTopKSamplingHook (epoch {epoch}): {int((labels[keep] == 1).sum())} '
                  f'positive / {int((labels[keep] == 0).sum())} negative tiles from {len(keys)} '
                  f'images (before balancing {int((labels == 1).sum())} / '
                  f'{int((labels == 0).sum())})', logger='current')
        self.last_clamped = clamped
        return selection
