"""Losses of MIL counting (Ye et al., Pattern Recognition 2026): counter, tile classifier, Dice.

* :class:`MILCountLoss` -- stage 1: ``alpha * CE(category logits, category) + beta * MSE(count,
  GT count)`` on raw counts (``alpha = beta = 1``).
* :class:`MILTileLoss` -- stage 2: 2-class cross-entropy over the selected tiles times ``gamma``;
  an empty selection gives an exact 0 (no NaN).
* :class:`MILDiceLoss` -- stage 3: soft Dice on the foreground softmax channel only,
  ``1 - (2 sum p y + eps) / (sum p^2 + sum y^2 + eps)`` per image, averaged over images (mmseg's
  ``DiceLoss`` averages over both channels and puts ``eps`` elsewhere).
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg.registry import MODELS

__all__ = ['MILCountLoss', 'MILTileLoss', 'MILDiceLoss', 'soft_dice_loss']


@MODELS.register_module()
class MILCountLoss(nn.Module):
    """``{'loss_cls': alpha * CE, 'loss_reg': beta * MSE}`` of the image-wise counter.

    Args:
        alpha: weight of the category cross-entropy (0 disables the class branch loss).
        beta: weight of the count regression MSE (on raw counts, as the reference).
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0) -> None:
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f'need alpha, beta >= 0 and not both 0, got {alpha}, {beta}')
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, cls_logits: torch.Tensor, reg: torch.Tensor, gt_cls: torch.Tensor,
                gt_count: torch.Tensor) -> Dict[str, torch.Tensor]:
        losses = {}
        if self.alpha > 0:
            losses['loss_cls'] = self.alpha * F.cross_entropy(cls_logits, gt_cls.long())
        if self.beta > 0:
            losses['loss_reg'] = self.beta * F.mse_loss(reg.reshape(-1),
                                                        gt_count.float().reshape(-1))
        return losses


@MODELS.register_module()
class MILTileLoss(nn.Module):
    """Cross-entropy over selected tiles, times ``gamma``; 0 (with gradient) when none."""

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.numel() == 0 or labels.numel() == 0:
            return logits.sum() * 0.0
        return self.gamma * F.cross_entropy(logits, labels.long())


def soft_dice_loss(logits: torch.Tensor,
                   target: torch.Tensor,
                   eps: float = 1e-6,
                   valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over images of ``1 - (2 sum p y + eps) / (sum p^2 + sum y^2 + eps)``.

    Args:
        logits: ``(B, 2, H, W)``; ``p = softmax(logits, 1)[:, 1]``.
        target: ``(B, H, W)`` in {0, 1} (other values count as 0 unless masked by ``valid``).
        valid: optional ``(B, H, W)`` bool, pixels outside are ignored.
    """
    if logits.dim() != 4 or logits.shape[1] != 2:
        raise ValueError(f'logits must be (B, 2, H, W), got {tuple(logits.shape)}')
    p = logits.softmax(1)[:, 1]
    y = (target == 1).to(p.dtype)
    if valid is not None:
        v = valid.to(p.dtype)
        p, y = p * v, y * v
    inter = (p * y).flatten(1).sum(1)
    den = (p * p).flatten(1).sum(1) + (y * y).flatten(1).sum(1)
    return (1 - (2 * inter + eps) / (den + eps)).mean()


@MODELS.register_module()
class MILDiceLoss(nn.Module):
    """mmseg decode-head loss wrapper of :func:`soft_dice_loss` (pixels == ``ignore_index`` are
    left out)."""

    def __init__(self, loss_weight: float = 1.0, eps: float = 1e-6,
                 loss_name: str = 'loss_dice') -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.eps = float(eps)
        self._loss_name = loss_name

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight=None,
                ignore_index: int = 255, **kwargs) -> torch.Tensor:
        valid = target != ignore_index
        return self.loss_weight * soft_dice_loss(pred, target, self.eps, valid)

    @property
    def loss_name(self) -> str:
        return self._loss_name
