"""The one place that holds per-image pseudo-label state (EMA soft labels, masked pseudo-labels).

It lives in the model process (an attribute of the segmentor), never in data-loader workers: the
data pipeline only loads images and sparse labels and records where a training crop came from
(``crop_box``); the segmentor then cuts the same window out of the stored maps. Training processes
keep identical copies (every refresh / masking pass is computed on a shard per process and
all-gathered), and :class:`~protocal.engine.hooks.PseudoLabelHook` saves the state into every
checkpoint and restores it on resume (``state_dict`` / ``load_state_dict`` round-trip exactly).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmseg.registry import TASK_UTILS
from torch import Tensor

__all__ = ['PseudoLabelStore']


@TASK_UTILS.register_module()
class PseudoLabelStore:
    """Per-image EMA soft labels, stored pseudo-labels and the ANPM learning-curve state.

    Maps are kept at the resolution of the sample after the deterministic part of the pipeline
    (loading and optional fixed resize), keyed by the dataset index ``sample_idx``.

    Args:
        num_classes: ``C`` (background included).
        ignore_index: value of noisy / unknown pixels in the stored pseudo-labels.
        ema_alpha: EMA weight of a new prediction (0.2, Scribble2Label / ProCNS).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, ema_alpha: float = 0.2) -> None:
        if not 0 < ema_alpha <= 1:
            raise ValueError(f'ema_alpha must be in (0, 1], got {ema_alpha}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.ema_alpha = ema_alpha
        self.ema: Dict[int, Tensor] = {}
        self.pseudo: Dict[int, Tensor] = {}
        self.sample_ids: Dict[int, str] = {}
        self.num_refreshes = 0
        self.num_mask_passes = 0
        self.released = torch.zeros(num_classes, dtype=torch.bool)
        self.released[0] = True
        self.release_epoch = torch.full((num_classes,), -1, dtype=torch.long)
        self._history: List[Tensor] = []  # per-iteration (C, 3) counts (TP, pred, target)
        self._synced = 0  # number of history rows already reduced over processes

    # ------------------------------------------------------------------ updates
    def __len__(self) -> int:
        return len(self.ema)

    def ema_update(self, idx: int, probs: Tensor, sample_id: Optional[str] = None) -> None:
        """``w <- alpha p + (1 - alpha) w`` (``w`` starts at 0) and ``Y^ <- argmax w``."""
        probs = probs.detach().float().cpu()
        if probs.dim() != 3 or probs.shape[0] != self.num_classes:
            raise ValueError(f'expected ({self.num_classes}, H, W) probabilities, got '
                             f'{tuple(probs.shape)}')
        old = self.ema.get(idx)
        if old is not None and old.shape != probs.shape:
            raise ValueError(f'sample {idx} ({self.sample_ids.get(idx)}): stored map '
                             f'{tuple(old.shape)} and new prediction {tuple(probs.shape)} differ')
        base = old if old is not None else torch.zeros_like(probs)
        new = self.ema_alpha * probs + (1 - self.ema_alpha) * base
        self.ema[idx] = new
        self.pseudo[idx] = new.argmax(0).to(torch.uint8)
        if sample_id is not None:
            self.sample_ids[idx] = sample_id

    def reset_pseudo_from_ema(self, idx: int) -> None:
        self.pseudo[idx] = self.ema[idx].argmax(0).to(torch.uint8)

    def mask_pixels(self, idx: int, mask: Tensor) -> None:
        """Set the stored pseudo-label of ``idx`` to ``ignore_index`` where ``mask`` is True."""
        current = self.pseudo[idx]
        if mask.shape != current.shape:
            raise ValueError(f'mask {tuple(mask.shape)} vs stored {tuple(current.shape)}')
        self.pseudo[idx] = current.masked_fill(mask.cpu().bool(), self.ignore_index)

    def record_counts(self, counts: Tensor) -> None:
        """Append one iteration's per-class (TP, predicted, target) counts, (C, 3)."""
        self._history.append(counts.detach().float().cpu())

    def sync_history(self) -> None:
        """Sum the not yet synchronised history rows over processes (no-op on one process)."""
        from mmengine.dist import all_reduce, get_world_size
        if get_world_size() == 1 or self._synced == len(self._history):
            self._synced = len(self._history)
            return
        block = torch.stack(self._history[self._synced:])
        all_reduce(block, op='sum')
        self._history[self._synced:] = list(block)
        self._synced = len(self._history)

    def dice_history(self) -> Tensor:
        """(T, C) per-iteration Dice ``2 TP / (T + P + 1e-10)``."""
        if not self._history:
            return torch.zeros(0, self.num_classes)
        counts = torch.stack(self._history)
        return 2 * counts[..., 0] / (counts[..., 1] + counts[..., 2] + 1e-10)

    # ------------------------------------------------------------------ reads
    def has(self, idx: int) -> bool:
        return idx in self.pseudo

    def gather(self, indices: Sequence[int], boxes: Sequence[Sequence[int]],
               out_hw: Tuple[int, int], with_ema: bool = False,
               device=None) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """Cut the training windows out of the stored maps and pad them to the batch size.

        Args:
            indices: ``sample_idx`` of every image of the batch.
            boxes: ``(y1, y2, x1, x2)`` window of each image in stored-map coordinates.
            out_hw: padded batch size ``(H, W)``.

        Returns:
            pseudo (B, H, W) long (``ignore_index`` where unknown or padded), ema (B, C, H, W) or
            None, present (B,) bool (the image has a stored map).
        """
        height, width = out_hw
        batch = len(indices)
        pseudo = torch.full((batch, height, width), self.ignore_index, dtype=torch.long)
        ema = torch.zeros(batch, self.num_classes, height, width) if with_ema else None
        present = torch.zeros(batch, dtype=torch.bool)
        for b, (idx, box) in enumerate(zip(indices, boxes)):
            if idx not in self.pseudo:
                continue
            y1, y2, x1, x2 = (int(v) for v in box)
            stored = self.pseudo[idx]
            if y2 > stored.shape[0] or x2 > stored.shape[1] or y2 - y1 > height or x2 - x1 > width:
                raise ValueError(
                    f'sample {idx} ({self.sample_ids.get(idx)}): crop box {tuple(box)} does not fit '
                    f'the stored map {tuple(stored.shape)} / batch {out_hw}; the train pipeline '
                    'must only crop (SparseSegRandomCrop) after a deterministic resize')
            pseudo[b, :y2 - y1, :x2 - x1] = stored[y1:y2, x1:x2].long()
            if with_ema:
                ema[b, :, :y2 - y1, :x2 - x1] = self.ema[idx][:, y1:y2, x1:x2]
            present[b] = True
        if device is not None:
            pseudo = pseudo.to(device)
            ema = ema.to(device) if ema is not None else None
        return pseudo, ema, present

    # ------------------------------------------------------------------ (de)serialisation
    def state_dict(self) -> dict:
        keys = sorted(self.ema)
        return dict(
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            ema_alpha=self.ema_alpha,
            indices=torch.tensor(keys, dtype=torch.long),
            ema=[self.ema[k].clone() for k in keys],
            pseudo=[self.pseudo[k].clone() for k in keys],
            sample_ids=[self.sample_ids.get(k, '') for k in keys],
            num_refreshes=self.num_refreshes,
            num_mask_passes=self.num_mask_passes,
            released=self.released.clone(),
            release_epoch=self.release_epoch.clone(),
            history=(torch.stack(self._history) if self._history else
                     torch.zeros(0, self.num_classes, 3)),
            synced=self._synced)

    def load_state_dict(self, state: dict) -> None:
        if int(state['num_classes']) != self.num_classes:
            raise ValueError(f"checkpoint pseudo-label store has {state['num_classes']} classes, "
                             f'the model {self.num_classes}')
        keys = [int(k) for k in state['indices'].tolist()]
        self.ema = {k: v.clone() for k, v in zip(keys, state['ema'])}
        self.pseudo = {k: v.clone() for k, v in zip(keys, state['pseudo'])}
        self.sample_ids = {k: s for k, s in zip(keys, state['sample_ids']) if s}
        self.num_refreshes = int(state['num_refreshes'])
        self.num_mask_passes = int(state['num_mask_passes'])
        self.released = state['released'].clone().bool()
        self.release_epoch = state['release_epoch'].clone().long()
        self._history = list(state['history'].float())
        self._synced = int(state['synced'])

    def check_sample_ids(self, ids: Dict[int, str]) -> None:
        """Raise if a restored entry belongs to another image than the dataset's (changed split)."""
        for idx, name in self.sample_ids.items():
            if idx in ids and ids[idx] != name:
                raise ValueError(f'pseudo-label store entry {idx} was made for {name!r} but the '
                                 f'dataset now has {ids[idx]!r} at that index; resume with the '
                                 'same dataset and split')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(images={len(self)}, refreshes={self.num_refreshes}, '
                f'mask_passes={self.num_mask_passes}, released={self.released.tolist()})')
