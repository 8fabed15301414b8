"""Soft (heatmap) cross-entropy: the plain baseline and the kernel every calibrated loss reuses."""
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

__all__ = ['soft_cross_entropy_map', 'reduce_over_pixels', 'zero_loss', 'SoftCrossEntropyLoss']

#: ``ln(1e-10)``: the reference clips probabilities to [1e-10, 1] before the log.
LOG_PROB_FLOOR = math.log(1e-10)


def soft_cross_entropy_map(logits: Tensor, target: Tensor) -> Tensor:
    """Per-channel soft cross-entropy ``-Y_c * ln(clip(P_c, 1e-10, 1))``, shape (B, C, H, W).

    ``P = softmax(logits)`` is computed with ``log_softmax`` for numerical stability; the floor at
    ``ln(1e-10)`` reproduces the reference clipping (its gradient is zero below the floor, as with
    clipping).
    """
    if logits.shape != target.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and target {tuple(target.shape)} '
                         'must have the same shape (B, K+1, H, W)')
    log_prob = F.log_softmax(logits.float(), dim=1).clamp(min=LOG_PROB_FLOOR)
    return -target.float() * log_prob


def reduce_over_pixels(loss_map: Tensor, valid_mask: Optional[Tensor] = None) -> Tensor:
    """Sum over channels, mean over (image, row, column) pixels that are valid.

    Args:
        loss_map: (B, C, H, W).
        valid_mask: (B, 1, H, W) bool, False on padding; ``None`` means all valid.
    """
    per_pixel = loss_map.sum(1, keepdim=True)
    if valid_mask is None:
        return per_pixel.mean()
    valid = valid_mask.to(per_pixel.dtype)
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


def zero_loss(*tensors: Tensor) -> Tensor:
    """A zero that stays connected to the graph (keeps DDP from complaining about unused params)."""
    return sum(t.sum() for t in tensors) * 0.0


@MODELS.register_module()
class SoftCrossEntropyLoss(nn.Module):
    """Plain heatmap loss: ``mean_{b,y,x} sum_c -Y_c ln P_c`` on the sparse soft target.

    With sparse annotation this treats every unannotated cell as background; SEL and PCL calibrate
    exactly this term. Accepts (and ignores) the embedding arguments so every heatmap loss has the
    same call signature (see ``docs/architecture.md``).

    Args:
        loss_weight: multiplier of the returned loss.
        loss_name: key of the returned loss.
    """

    #: heads skip the node-embedding branch for losses that do not read it (otherwise its
    #: parameters get no gradient, which DistributedDataParallel rejects)
    uses_embeddings = False

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss_ce'):
        super().__init__()
        self.loss_weight = loss_weight
        self.loss_name = loss_name

    def forward(self,
                logits: Tensor,
                target: Tensor,
                embed: Optional[Tensor] = None,
                node_masks: Optional[Tensor] = None,
                valid_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        loss = reduce_over_pixels(soft_cross_entropy_map(logits, target), valid_mask)
        return {self.loss_name: self.loss_weight * loss}
