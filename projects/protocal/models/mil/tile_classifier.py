"""Stage 2 of MIL counting: the tile instance classifier trained by adaptive top-k selection.

The encoder comes from the stage-1 counter (``load_from``) and is frozen (``freeze_backbone``,
BatchNorm in eval mode); only ``tile_head`` (``Linear(C, 2)`` on GAP+GMP of the tile features) is
trained. Every epoch :class:`~protocal.models.mil.MILTopKSamplingHook` scores **all** tiles of
every training image in a fixed order (:meth:`MILTileClassifier.score_tiles`, batched over the
whole image), picks the ``count * k_per_pos`` best tiles of each positive image as positives and the
``k_neg`` best tiles of each zero-count image as hard negatives, balances them to
``pos_neg_ratio`` and hands the selection to the model; :meth:`loss` then trains on the selected
tiles of the images in the batch.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from mmseg.registry import MODELS
from .counter import backbone_last, gap_gmp
from .tiling import (balance_selection, extract_tiles, tile_grid, tile_heatmap, topk_select)

__all__ = ['MILTileClassifier']


@MODELS.register_module()
class MILTileClassifier(BaseModel):
    """Tile classifier ``p(tile holds a positive cell)``.

    Args:
        backbone: backbone config (same as the counter's, so its weights load).
        in_channels: channels of the backbone's last output.
        tile_size / tile_stride: training tiles (reference: 32 / 20 -> 225 tiles on 299 px).
        k_per_pos: tiles per counted cell (``k = round(count * k_per_pos)``).
        k_neg: hard negatives per zero-count image (30).
        pos_neg_ratio: positives : negatives after balancing (0.5).
        freeze_backbone: freeze the encoder and its BatchNorm (reference); ``False`` is the
            ``--scratch`` ablation.
        tile_batch: tiles per forward pass when scoring (memory bound only).
        loss: ``MILTileLoss`` config (``gamma = 1``).
        seed: seed of the balancing RNG (with the epoch), for reproducible selections.
    """

    def __init__(self,
                 backbone: dict,
                 in_channels: int = 2048,
                 tile_size: int = 32,
                 tile_stride: int = 20,
                 k_per_pos: float = 1.0,
                 k_neg: int = 30,
                 pos_neg_ratio: float = 0.5,
                 freeze_backbone: bool = True,
                 tile_batch: int = 4096,
                 loss: dict = dict(type='MILTileLoss', gamma=1.0),
                 seed: int = 0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.tile_head = nn.Linear(in_channels, 2)
        self.loss_module = MODELS.build(loss)
        self.tile_size, self.tile_stride = int(tile_size), int(tile_stride)
        self.k_per_pos, self.k_neg = float(k_per_pos), int(k_neg)
        self.pos_neg_ratio = pos_neg_ratio
        self.freeze_backbone = bool(freeze_backbone)
        self.tile_batch = int(tile_batch)
        self.seed = int(seed)
        self._selection: Optional[Dict] = None
        self._warned_online = False
        if self.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen BatchNorm statistics (the reference's freeze_bn)
        return self

    # ------------------------------------------------------------------ tiles
    def grid(self, height: int, width: int) -> np.ndarray:
        return tile_grid(height, width, self.tile_size, self.tile_stride)

    def tile_logits(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(N, C, t, t)`` normalised tiles -> ``(N, 2)`` logits."""
        return self.tile_head(gap_gmp(backbone_last(self.backbone, tiles)))

    @torch.no_grad()
    def score_tiles(self, inputs: torch.Tensor, tile_size: Optional[int] = None,
                    tile_stride: Optional[int] = None) -> Tuple[torch.Tensor, np.ndarray]:
        """Probabilities of all tiles of a batch, in grid order, batched over whole images.

        Args:
            inputs: ``(B, C, H, W)`` normalised images (after the data preprocessor).
            tile_size / tile_stride: override the training tiles (e.g. pseudo masks).

        Returns:
            ``(probs (B, T) float, grid (T, 2) int64 (y0, x0))``.
        """
        t = self.tile_size if tile_size is None else int(tile_size)
        s = self.tile_stride if tile_stride is None else int(tile_stride)
        was_training = self.training
        self.eval()
        b, c, h, w = inputs.shape
        grid = tile_grid(h, w, t, s)
        tiles = extract_tiles(inputs, grid, t).reshape(b * len(grid), c, t, t)
        out = []
        for i in range(0, tiles.shape[0], self.tile_batch):
            out.append(self.tile_logits(tiles[i:i + self.tile_batch]).softmax(1)[:, 1])
        self.train(was_training)
        return torch.cat(out).reshape(b, len(grid)), grid

    # ------------------------------------------------------------------ selection
    def set_tile_selection(self, selection: Optional[Dict]) -> None:
        """``{img_id: (tile_idx int64 (k,), labels int64 (k,))}`` for the next epoch."""
        self._selection = selection

    def select_tiles(self, probs: torch.Tensor, counts: Sequence[int]
                     ) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], int]:
        """Adaptive top-k of each image (no balancing); returns the picks and the number of
        images whose ``count * k_per_pos`` exceeded the number of tiles (clamped)."""
        picks, clamped = [], 0
        for p, c in zip(probs, counts):
            idx, lab, cl = topk_select(p, int(c), self.k_per_pos, self.k_neg)
            picks.append((idx, lab))
            clamped += int(cl)
        return picks, clamped

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: torch.Tensor, data_samples: Optional[List] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.score_tiles(inputs)[0]
        raise RuntimeError(f'Invalid mode "{mode}"')

    def _batch_selection(self, inputs: torch.Tensor, data_samples: List
                         ) -> List[Tuple[np.ndarray, np.ndarray]]:
        if self._selection is not None:
            out = []
            for s in data_samples:
                key = s.metainfo.get('img_id')
                if key not in self._selection:
                    raise KeyError(f'MILTileClassifier: no tile selection for image {key!r}; '
                                   'MILTopKSamplingHook must score the same training set')
                out.append(self._selection[key])
            return out
        # no hook: select online from the current scores, balanced within the batch
        if not self._warned_online:
            print_log('MILTileClassifier: no MILTopKSamplingHook selection; selecting top-k '
                      'tiles per batch (add the hook to custom_hooks for the reference '
                      'per-epoch selection)', logger='current', level=logging.WARNING)
            self._warned_online = True
        probs, _ = self.score_tiles(inputs)
        counts = [int(s.gt_count.item()) for s in data_samples]
        picks, _ = self.select_tiles(probs, counts)
        labels = np.concatenate([p[1] for p in picks]) if picks else np.zeros(0, np.int64)
        keep = balance_selection(labels, self.pos_neg_ratio, np.random.default_rng(self.seed))
        out, start = [], 0
        for idx, lab in picks:
            k = keep[start:start + len(idx)]
            out.append((idx[k], lab[k]))
            start += len(idx)
        return out

    def loss(self, inputs: torch.Tensor, data_samples: List) -> Dict[str, torch.Tensor]:
        sel = self._batch_selection(inputs, data_samples)
        b, c, h, w = inputs.shape
        grid = self.grid(h, w)
        tiles, labels = [], []
        for i, (idx, lab) in enumerate(sel):
            if len(idx):
                tiles.append(extract_tiles(inputs[i:i + 1], grid, self.tile_size, idx)[0])
                labels.append(torch.as_tensor(lab, device=inputs.device))
        if not tiles:
            zero = self.tile_head.weight.sum() * 0.0
            return dict(loss_tile=zero)
        tiles = torch.cat(tiles)
        labels = torch.cat(labels)
        if self.freeze_backbone:
            with torch.no_grad():
                feats = gap_gmp(backbone_last(self.backbone, tiles))
            logits = self.tile_head(feats)
        else:
            logits = self.tile_logits(tiles)
        loss = self.loss_module(logits, labels)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean()
        return dict(loss_tile=loss, tile_acc=acc)

    def predict(self, inputs: torch.Tensor, data_samples: Optional[List] = None) -> List:
        """Tile probabilities (``pred_tile_scores``, grid order), the grid and a max heatmap."""
        probs, grid = self.score_tiles(inputs)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(inputs.shape[0])]
        h, w = inputs.shape[-2:]
        for i, s in enumerate(data_samples):
            s.pred_tile_scores = probs[i]
            s.set_metainfo(dict(tile_grid=grid, tile_size=self.tile_size))
            s.pred_tile_heatmap = torch.from_numpy(
                tile_heatmap(probs[i], grid, (h, w), self.tile_size))
        return data_samples
