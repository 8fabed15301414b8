"""SEL: Semantic Energy Loss and Stretched Feature Loss (Xu et al., IEEE BIBM 2023).

``L = ce_weight * L_CE_SE + L_SFL`` with

* ``L_CE_SE = mean_{b,y,x} sum_c -Y_c ln P_c * E(y, x)`` where ``E`` is the class-agnostic semantic
  energy of the node covering pixel (y, x), bilinearly upsampled (see
  :func:`protocal.prototypes.agnostic_energy`), copied to every channel;
* ``L_SFL`` pushes unlabelled node features away from labelled ones (:class:`StretchedFeatureLoss`).

Differences from the reference code (all listed in ``configs/sel/README.md``): node labels come
straight from the annotated points in row-major order (T1-T3); images without labelled nodes give
a finite SFL (they are skipped, T7); features are normalised with an epsilon (T7); the SFL weight
``lambda_2 = 0.05`` is the training value (T22).
"""
from typing import Dict, Optional

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from protocal.prototypes import (agnostic_energy, energy_to_pixels, flatten_nodes,
                                 labelled_to_unlabelled_distances)
from .ce import (FUSED_DEFAULT, fp32_region, fused_soft_ce, reduce_over_pixels,
                 soft_cross_entropy_map, zero_loss)

__all__ = ['StretchedFeatureLoss', 'SemanticEnergyLoss', 'energy_weighted_ce']

SFL_WEIGHT_MODES = ('sel', 'pcl')


def energy_weighted_ce(logits: Tensor, target: Tensor, node_energy: Tensor,
                       grid_hw, valid_mask: Optional[Tensor], upsample: str,
                       detach: bool, fused: bool = FUSED_DEFAULT) -> Tensor:
    """Soft cross-entropy whose every channel is multiplied by the pixel energy.

    Args:
        node_energy: (B, N) (one map for all channels) or (B, K+1, N) (one per channel).
        fused: use :func:`~protocal.models.losses.ce.fused_soft_ce` (same value and gradients,
            no full-resolution energy map or cross-entropy map); ``False`` upsamples the energies
            with :func:`~protocal.prototypes.energy_to_pixels` and multiplies.
    """
    if fused:
        energy = node_energy.detach() if detach else node_energy
        if energy.dim() == 2:
            energy = energy.unsqueeze(1)
        grid = energy.reshape(energy.shape[0], energy.shape[1], *grid_hw).float()
        return fused_soft_ce(logits, target, grid, valid_mask, upsample)[0]
    pixel_energy = energy_to_pixels(node_energy, grid_hw, logits.shape[-2:], mode=upsample,
                                    detach=detach, channels=logits.shape[1])
    return reduce_over_pixels(soft_cross_entropy_map(logits, target) * pixel_energy, valid_mask)


@MODELS.register_module()
class StretchedFeatureLoss(nn.Module):
    """Stretched Feature Loss (SFL).

    For each image with both labelled (``A``) and unlabelled nodes::

        term_b = w_b * mean_{j in A, l not in A} exp(tau - ||f_j - f_l||_2)

    on raw (un-normalised) node features, and ``L = loss_weight * mean_b term_b`` over those images.
    Images without labelled (or without unlabelled) nodes are skipped instead of producing NaN (T7).

    Weights ``w_b`` (``N`` nodes, ``n_b^c`` labelled nodes of class ``c``):

    * ``'sel'``: ``n_b / N`` with ``n_b`` the number of labelled nodes (any class);
    * ``'pcl'``: ``sum_c n_b^c / (0.05 * N)``, the intended PCL weight; with
      ``reference_compat_weight=True`` the reference's operator-precedence result
      ``n_b^1 + sum_{c>=2} n_b^c / (0.05 * N)`` is used instead (T8).

    Args:
        tau: margin in ``exp(tau - d)`` (10 for SEL, 3 for PCL).
        weight_mode: ``'sel'`` or ``'pcl'``.
        loss_weight: ``lambda_2`` (0.05 in both papers' training scripts).
        reference_compat_weight: reproduce PCL's T8 weight for parity experiments.
    """

    def __init__(self,
                 tau: float = 10.0,
                 weight_mode: str = 'sel',
                 loss_weight: float = 0.05,
                 reference_compat_weight: bool = False,
                 loss_name: str = 'loss_sfl'):
        super().__init__()
        if weight_mode not in SFL_WEIGHT_MODES:
            raise ValueError(f'weight_mode must be one of {SFL_WEIGHT_MODES}, got {weight_mode!r}')
        if reference_compat_weight and weight_mode != 'pcl':
            raise ValueError("reference_compat_weight only applies to weight_mode='pcl'")
        self.tau = tau
        self.weight_mode = weight_mode
        self.loss_weight = loss_weight
        self.reference_compat_weight = reference_compat_weight
        self.loss_name = loss_name

    def image_weights(self, node_masks: Tensor) -> Tensor:
        """(B,) weights ``w_b`` from (B, K, N) node masks."""
        num_nodes = node_masks.shape[-1]
        if self.weight_mode == 'sel':
            return node_masks.any(1).sum(-1).float() / num_nodes
        per_class = node_masks.sum(-1).float()  # (B, K)
        if self.reference_compat_weight:
            return per_class[:, 0] + per_class[:, 1:].sum(-1) / (num_nodes * 0.05)
        return per_class.sum(-1) / (0.05 * num_nodes)

    def forward(self, embed: Tensor, node_masks: Tensor) -> Tensor:
        with fp32_region(embed.device):  # distances in float32 even under autocast
            return self._forward(flatten_nodes(embed).float(), node_masks, embed)

    def _forward(self, feats: Tensor, node_masks: Tensor, embed: Tensor) -> Tensor:
        labelled = node_masks.any(1)
        dist, pair_mask = labelled_to_unlabelled_distances(feats, labelled)
        pairs = pair_mask.sum((1, 2))
        valid = pairs > 0
        if not bool(valid.any()):
            return zero_loss(embed)
        # exp(tau - d) only where needed; padded rows/labelled columns contribute nothing
        terms = torch.where(pair_mask, torch.exp(self.tau - dist), torch.zeros_like(dist))
        per_image = terms.sum((1, 2)) / pairs.clamp(min=1)
        per_image = per_image * self.image_weights(node_masks)
        return self.loss_weight * per_image[valid].mean()


@MODELS.register_module()
class SemanticEnergyLoss(nn.Module):
    """SEL total loss: semantic-energy calibrated cross-entropy + Stretched Feature Loss.

    Args:
        ce_weight: ``lambda_1`` of the calibrated cross-entropy (2.0).
        detach_energy: stop gradients through the energy. The paper's code does not detach
            (default ``False``), so the cross-entropy also shapes the node features.
        energy_upsample: ``'bilinear'`` (reference) or ``'nearest'``.
        sfl: config of :class:`StretchedFeatureLoss` (``None`` disables it).
        fused: compute the calibrated cross-entropy with
            :func:`~protocal.models.losses.ce.fused_soft_ce` (same value and gradients, a fraction
            of the time and memory; see ``configs/sel/README.md``, "Loss cost"). ``False`` keeps
            the composed reference path.

    Energies and the SFL are computed in float32 with autocast off, so mixed-precision training
    (``AmpOptimWrapper``) only lowers the precision of the network, not of the calibration.
    """

    def __init__(self,
                 ce_weight: float = 2.0,
                 detach_energy: bool = False,
                 energy_upsample: str = 'bilinear',
                 sfl: Optional[dict] = dict(
                     type='StretchedFeatureLoss', tau=10.0, weight_mode='sel', loss_weight=0.05),
                 fused: bool = FUSED_DEFAULT):
        super().__init__()
        self.fused = fused
        self.ce_weight = ce_weight
        self.detach_energy = detach_energy
        self.energy_upsample = energy_upsample
        self.sfl = MODELS.build(sfl) if sfl is not None else None

    def forward(self,
                logits: Tensor,
                target: Tensor,
                embed: Optional[Tensor] = None,
                node_masks: Optional[Tensor] = None,
                valid_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        if embed is None or node_masks is None:
            raise ValueError('SemanticEnergyLoss needs the node embeddings and node masks; use a '
                             'head that produces embeddings (e.g. HeatmapPointHead)')
        with fp32_region(embed.device):
            energy = agnostic_energy(flatten_nodes(embed).float(), node_masks)
        losses = {
            'loss_ce': self.ce_weight * energy_weighted_ce(
                logits, target, energy, embed.shape[-2:], valid_mask, self.energy_upsample,
                self.detach_energy, fused=self.fused)
        }
        if self.sfl is not None:
            losses[self.sfl.loss_name] = self.sfl(embed, node_masks)
        return losses
