"""PCL: Prototype-Calibrated Loss for multi-class sparse cell detection (Xu et al.).

``L = ce_weight * L_CE_PC + L_SFL + L_EL`` with

* ``L_CE_PC = mean_{b,y,x} sum_c -Y_c ln P_c * E^c(y, x)``: channel ``c`` is weighted by its own
  energy (:func:`protocal.prototypes.class_energies`): background by the class-agnostic affinity to
  all labelled nodes, class ``c`` by a mix of the similarity to the EMA prototype ``p_c``
  (:class:`protocal.prototypes.PrototypeBank`) and the affinity to the image's class-``c`` nodes;
* ``L_SFL``: :class:`protocal.models.losses.StretchedFeatureLoss` with ``tau = 3`` and the PCL
  weight;
* ``L_EL``: :class:`ExclusiveLoss`.

The prototypes used by the loss are those from before the batch's EMA update (as in the paper).
Differences from the reference code are listed in ``configs/pcl/README.md`` (T3, T7, T8, T10, T11).
"""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

from protocal.prototypes import PrototypeBank, class_energies, flatten_nodes
from .ce import FUSED_DEFAULT, fp32_region, fused_soft_ce, zero_loss
from .sel import energy_weighted_ce

__all__ = ['ExclusiveLoss', 'PrototypeCalibratedLoss']


@MODELS.register_module()
class ExclusiveLoss(nn.Module):
    """Exclusive Loss (EL): inside annotated discs, push down the classes that are not there.

    ``R_b`` is the set of pixels where any foreground target is positive (the discs around the
    annotated points), ``H_c = 1[Y_c > 0]`` for foreground ``c`` and ``H_0 = max(1 - sum_c H_c, 0)``::

        L_b = sum_{p in R_b} sum_c (1 - H_c(p)) * ln(1 + P_c(p)) / |R_b|

    averaged over the images with a non-empty ``R_b`` (an image without annotation is skipped
    instead of giving ``0/0``, T7). The target is never modified in place (T11).

    Args:
        loss_weight: ``lambda_3`` (0.2 in PCL).
        reference_compat_negative_bg: keep the reference's ``H_0 = -1`` where discs of two
            classes overlap (parity only).
        fused: compute it with :func:`~protocal.models.losses.ce.fused_soft_ce` on the disc
            pixels only (same value and gradients); ``False`` keeps the full-resolution path.
    """

    def __init__(self, loss_weight: float = 0.2, reference_compat_negative_bg: bool = False,
                 loss_name: str = 'loss_el', fused: bool = FUSED_DEFAULT):
        super().__init__()
        self.fused = fused
        self.loss_weight = loss_weight
        self.reference_compat_negative_bg = reference_compat_negative_bg
        self.loss_name = loss_name

    def forward(self, logits: Tensor, target: Tensor,
                valid_mask: Optional[Tensor] = None) -> Tensor:
        if self.fused:
            return self.loss_weight * fused_soft_ce(
                logits, target, valid_mask=valid_mask, with_ce=False, exclusive=True,
                exclusive_negative_bg=self.reference_compat_negative_bg)[1]
        fg_hard = (target[:, 1:] > 0).to(logits.dtype)  # (B, K, H, W)
        bg_hard = 1 - fg_hard.sum(1, keepdim=True)
        if not self.reference_compat_negative_bg:
            bg_hard = bg_hard.clamp(min=0)
        hard = torch.cat([bg_hard, fg_hard], dim=1)
        region = fg_hard.sum(1) > 0  # (B, H, W)
        if valid_mask is not None:
            region = region & valid_mask[:, 0]
        area = region.sum((1, 2))
        valid = area > 0
        if not bool(valid.any()):
            return zero_loss(logits)
        probs = F.softmax(logits.float(), dim=1).clamp(1e-10, 1)
        per_pixel = ((1 - hard) * torch.log1p(probs)).sum(1)  # (B, H, W)
        per_image = (per_pixel * region).sum((1, 2)) / area.clamp(min=1)
        return self.loss_weight * per_image[valid].mean()


@MODELS.register_module()
class PrototypeCalibratedLoss(nn.Module):
    """PCL total loss: prototype-calibrated cross-entropy + SFL + Exclusive Loss.

    Args:
        num_classes: foreground classes ``K`` (filled in by the head when omitted).
        embed_dims: node feature dimension ``D`` (filled in by the head when omitted).
        ce_weight: ``lambda_1`` (2.0).
        alpha: weight of the global prototype term in the class energies (0.2).
        momentum: EMA momentum of the prototypes (0.01).
        prototype_similarity: ``'cosine'`` (reference: raw cosine in [-1, 1], T9) or ``'cosine01'``.
        prototype_seed: seed of the initial prototypes.
        detach_energy: stop gradients through the energies (reference: ``False``).
        energy_upsample: ``'bilinear'`` (reference) or ``'nearest'``.
        sfl: :class:`StretchedFeatureLoss` config (``None`` disables it).
        exclusive: :class:`ExclusiveLoss` config (``None`` disables it).
        fused: compute the calibrated cross-entropy and the Exclusive Loss in one pass with
            :func:`~protocal.models.losses.ce.fused_soft_ce` (same values and gradients, a
            fraction of the time and memory; see ``configs/pcl/README.md``, "Loss cost").
            ``False`` keeps the composed reference path.

    Energies, prototypes and the SFL are computed in float32 with autocast off, so
    mixed-precision training (``AmpOptimWrapper``) only lowers the precision of the network.
    """

    def __init__(self,
                 num_classes: int,
                 embed_dims: int,
                 ce_weight: float = 2.0,
                 alpha: float = 0.2,
                 momentum: float = 0.01,
                 prototype_similarity: str = 'cosine',
                 prototype_seed: int = 0,
                 detach_energy: bool = False,
                 energy_upsample: str = 'bilinear',
                 sfl: Optional[dict] = dict(
                     type='StretchedFeatureLoss', tau=3.0, weight_mode='pcl', loss_weight=0.05),
                 exclusive: Optional[dict] = dict(type='ExclusiveLoss', loss_weight=0.2),
                 fused: bool = FUSED_DEFAULT):
        super().__init__()
        self.fused = fused
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'alpha must be in [0, 1], got {alpha}')
        self.num_classes = num_classes
        self.ce_weight = ce_weight
        self.alpha = alpha
        self.prototype_similarity = prototype_similarity
        self.detach_energy = detach_energy
        self.energy_upsample = energy_upsample
        self.bank = PrototypeBank(num_classes, embed_dims, momentum=momentum, seed=prototype_seed)
        self.sfl = MODELS.build(sfl) if sfl is not None else None
        self.exclusive = MODELS.build(exclusive) if exclusive is not None else None

    def forward(self,
                logits: Tensor,
                target: Tensor,
                embed: Optional[Tensor] = None,
                node_masks: Optional[Tensor] = None,
                valid_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        if embed is None or node_masks is None:
            raise ValueError('PrototypeCalibratedLoss needs the node embeddings and node masks')
        if node_masks.shape[1] != self.num_classes or logits.shape[1] != self.num_classes + 1:
            raise ValueError(f'PrototypeCalibratedLoss was built for {self.num_classes} classes but '
                             f'got logits with {logits.shape[1]} channels and node masks for '
                             f'{node_masks.shape[1]} classes')
        if embed.shape[1] != self.bank.dims:
            raise ValueError(f'embedding has {embed.shape[1]} channels, prototypes have '
                             f'{self.bank.dims}')
        with fp32_region(embed.device):
            feats = flatten_nodes(embed).float()
            prototypes = self.bank.prototypes.clone().float()  # the pre-update prototypes
            energy = class_energies(feats, node_masks, prototypes, self.alpha,
                                    self.prototype_similarity)
        # the Exclusive Loss reads the same log-softmax: one pass for both when fused
        fuse_el = self.fused and type(self.exclusive) is ExclusiveLoss
        if self.fused:
            grid = (energy.detach() if self.detach_energy else energy).reshape(
                *energy.shape[:2], *embed.shape[-2:])
            ce, el = fused_soft_ce(
                logits, target, grid, valid_mask, self.energy_upsample, exclusive=fuse_el,
                exclusive_negative_bg=fuse_el and self.exclusive.reference_compat_negative_bg)
            losses = {'loss_ce': self.ce_weight * ce}
        else:
            losses = {
                'loss_ce': self.ce_weight * energy_weighted_ce(
                    logits, target, energy, embed.shape[-2:], valid_mask, self.energy_upsample,
                    self.detach_energy, fused=False)
            }
        if self.sfl is not None:
            losses[self.sfl.loss_name] = self.sfl(embed, node_masks)
        if self.exclusive is not None:
            losses[self.exclusive.loss_name] = (
                self.exclusive.loss_weight * el if fuse_el else
                self.exclusive(logits, target, valid_mask))
        if self.training:
            with fp32_region(embed.device):
                self.bank.update(feats, node_masks)
        return losses
