"""Frozen copy of the composed (pre-issue-15) heatmap-loss path, reference of the equality tests.

Everything the fused path replaced is copied here verbatim from the implementation before issue 15:
the soft cross-entropy map, the pixel reduction, the energy upsampling, the energy-weighted
cross-entropy, the Exclusive Loss and the SEL / PCL totals. The node-level parts that did not
change (energies, SFL, prototype bank) are read from the loss modules themselves. Do not "fix"
this file: it documents what the losses computed.
"""
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from protocal.prototypes import agnostic_energy, class_energies, flatten_nodes

LOG_PROB_FLOOR = math.log(1e-10)


def soft_cross_entropy_map(logits: Tensor, target: Tensor) -> Tensor:
    log_prob = F.log_softmax(logits.float(), dim=1).clamp(min=LOG_PROB_FLOOR)
    return -target.float() * log_prob


def reduce_over_pixels(loss_map: Tensor, valid_mask: Optional[Tensor] = None) -> Tensor:
    per_pixel = loss_map.sum(1, keepdim=True)
    if valid_mask is None:
        return per_pixel.mean()
    valid = valid_mask.to(per_pixel.dtype)
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


def zero_loss(*tensors: Tensor) -> Tensor:
    return sum(t.sum() for t in tensors) * 0.0


def energy_to_pixels(energy, grid_hw, out_hw, mode='bilinear', detach=False, channels=None):
    if energy.dim() == 2:
        energy = energy.unsqueeze(1)
    if detach:
        energy = energy.detach()
    grid = energy.reshape(energy.shape[0], energy.shape[1], *grid_hw)
    kwargs = dict(align_corners=False) if mode == 'bilinear' else {}
    pixels = F.interpolate(grid, size=tuple(out_hw), mode=mode, **kwargs)
    if channels is not None and pixels.shape[1] == 1:
        pixels = pixels.expand(-1, channels, -1, -1)
    return pixels


def energy_weighted_ce(logits, target, node_energy, grid_hw, valid_mask, upsample, detach):
    pixel_energy = energy_to_pixels(node_energy, grid_hw, logits.shape[-2:], mode=upsample,
                                    detach=detach, channels=logits.shape[1])
    return reduce_over_pixels(soft_cross_entropy_map(logits, target) * pixel_energy, valid_mask)


def plain_ce(loss, logits, target, valid_mask=None) -> Dict[str, Tensor]:
    """``SoftCrossEntropyLoss.forward``."""
    value = reduce_over_pixels(soft_cross_entropy_map(logits, target), valid_mask)
    return {loss.loss_name: loss.loss_weight * value}


def exclusive_loss(loss, logits, target, valid_mask=None) -> Tensor:
    """``ExclusiveLoss.forward``."""
    fg_hard = (target[:, 1:] > 0).to(logits.dtype)
    bg_hard = 1 - fg_hard.sum(1, keepdim=True)
    if not loss.reference_compat_negative_bg:
        bg_hard = bg_hard.clamp(min=0)
    hard = torch.cat([bg_hard, fg_hard], dim=1)
    region = fg_hard.sum(1) > 0
    if valid_mask is not None:
        region = region & valid_mask[:, 0]
    area = region.sum((1, 2))
    valid = area > 0
    if not bool(valid.any()):
        return zero_loss(logits)
    probs = F.softmax(logits.float(), dim=1).clamp(1e-10, 1)
    per_pixel = ((1 - hard) * torch.log1p(probs)).sum(1)
    per_image = (per_pixel * region).sum((1, 2)) / area.clamp(min=1)
    return loss.loss_weight * per_image[valid].mean()


def sel_total(loss, logits, target, embed, node_masks, valid_mask=None) -> Dict[str, Tensor]:
    """``SemanticEnergyLoss.forward``."""
    feats = flatten_nodes(embed)
    energy = agnostic_energy(feats.float(), node_masks)
    losses = {
        'loss_ce': loss.ce_weight * energy_weighted_ce(
            logits, target, energy, embed.shape[-2:], valid_mask, loss.energy_upsample,
            loss.detach_energy)
    }
    if loss.sfl is not None:
        losses[loss.sfl.loss_name] = loss.sfl(embed, node_masks)
    return losses


def pcl_total(loss, logits, target, embed, node_masks, valid_mask=None) -> Dict[str, Tensor]:
    """``PrototypeCalibratedLoss.forward`` (including the EMA update in training mode)."""
    feats = flatten_nodes(embed).float()
    prototypes = loss.bank.prototypes.clone()
    energy = class_energies(feats, node_masks, prototypes, loss.alpha, loss.prototype_similarity)
    losses = {
        'loss_ce': loss.ce_weight * energy_weighted_ce(
            logits, target, energy, embed.shape[-2:], valid_mask, loss.energy_upsample,
            loss.detach_energy)
    }
    if loss.sfl is not None:
        losses[loss.sfl.loss_name] = loss.sfl(embed, node_masks)
    if loss.exclusive is not None:
        losses[loss.exclusive.loss_name] = exclusive_loss(loss.exclusive, logits, target,
                                                          valid_mask)
    if loss.training:
        loss.bank.update(feats, node_masks)
    return losses
