"""WSL4MIS baseline losses for segmentation from sparse labels (spec section 9), same call signature
as :class:`~protocal.models.losses.procns.ProCNSLoss`:
``loss(logits, sparse=, image=, feats=, valid=, pseudo=, ema=, stage=) -> dict``.

* :class:`PartialCELoss` -- pCE alone is the plain baseline; every other baseline is pCE + one term.
* :class:`GatedCRFLoss` -- 0.1 x Gated-CRF (Potts) energy with the PRSA kernel (sigma_xy 6,
  sigma_rgb
  0.1, radius 5) on the plain prediction, from :mod:`protocal.prototypes` (no second copy).
* :class:`EntropyMinimizationLoss` -- 0.1 x mean normalised entropy (normalised by ``log C``; the
  reference hard-codes ``log 3`` / ``C = 4``).
* :class:`TotalVariationLoss` -- 0.01 x mean |contour(P)| over **classes** (the reference sliced the
  batch, ``softmax[1:]``), contour = maxpool3(minpool3(P)) - minpool3(P).
* :class:`EMAPseudoLabelLoss` -- Scribble2Label-style pseudo-label method: after warm-up, CE on
  unlabelled pixels whose EMA soft label (the same :class:`PseudoLabelStore` ProCNS uses) is
  confident (> 0.8), weight 0.5.
"""
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

from protocal.prototypes.regional import local_kernel_config, local_potts_loss
from .procns import partial_cross_entropy

__all__ = [
    'PartialCELoss', 'GatedCRFLoss', 'EntropyMinimizationLoss', 'TotalVariationLoss',
    'EMAPseudoLabelLoss'
]


def _valid_mean(values: Tensor, valid: Optional[Tensor]) -> Tensor:
    if valid is None:
        return values.mean()
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1)


@MODELS.register_module()
class PartialCELoss(nn.Module):
    """Cross-entropy on labelled pixels only (``ignore_index`` = unlabelled); 0 without labels."""

    def __init__(self, ignore_index: int = 255, loss_weight: float = 1.0,
                 loss_name: str = 'loss_pce') -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self.loss_name = loss_name

    def forward(self, logits: Tensor, sparse: Tensor, valid: Optional[Tensor] = None,
                **kwargs) -> Dict[str, Tensor]:
        return {self.loss_name: self.loss_weight *
                partial_cross_entropy(logits, sparse, self.ignore_index, valid)}


@MODELS.register_module()
class GatedCRFLoss(nn.Module):
    """Gated-CRF energy (Obukhov et al. 2019) of the softmax prediction.

    Args:
        loss_weight: 0.1 (WSL4MIS).
        kernel: radius 5, sigma_xy 6, sigma_rgb 0.1 (image in [0, 1]), weight 1, dilation 1.
        destinations: ``'all'`` valid pixels (WSL4MIS) or ``'unlabelled'`` pixels only.
    """

    def __init__(self, loss_weight: float = 0.1, kernel: Optional[dict] = None,
                 destinations: str = 'all', ignore_index: int = 255,
                 loss_name: str = 'loss_gated_crf') -> None:
        super().__init__()
        if destinations not in ('all', 'unlabelled'):
            raise ValueError(f"destinations must be 'all' or 'unlabelled', got {destinations!r}")
        self.loss_weight = loss_weight
        self.kernel = local_kernel_config(kernel)
        self.destinations = destinations
        self.ignore_index = ignore_index
        self.loss_name = loss_name

    def forward(self, logits: Tensor, sparse: Tensor, image: Tensor,
                valid: Optional[Tensor] = None, **kwargs) -> Dict[str, Tensor]:
        if valid is None:
            valid = torch.ones_like(sparse, dtype=torch.bool)
        dest = valid if self.destinations == 'all' else valid & (sparse == self.ignore_index)
        loss = local_potts_loss(logits.float().softmax(1), image, dest, valid=valid,
                                **self.kernel)
        return {self.loss_name: self.loss_weight * loss}


@MODELS.register_module()
class EntropyMinimizationLoss(nn.Module):
    """``mean_x -sum_c P_c log P_c / log C`` over valid pixels (in [0, 1])."""

    def __init__(self, loss_weight: float = 0.1, loss_name: str = 'loss_entropy') -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.loss_name = loss_name

    def forward(self, logits: Tensor, valid: Optional[Tensor] = None,
                **kwargs) -> Dict[str, Tensor]:
        log_p = F.log_softmax(logits.float(), dim=1)
        entropy = -(log_p.exp() * log_p).sum(1) / math.log(logits.shape[1])
        return {self.loss_name: self.loss_weight * _valid_mean(entropy, valid)}


@MODELS.register_module()
class TotalVariationLoss(nn.Module):
    """Mean absolute morphological contour of every class probability map (WSL4MIS "TV")."""

    def __init__(self, loss_weight: float = 0.01, loss_name: str = 'loss_tv') -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.loss_name = loss_name

    @staticmethod
    def contour(probs: Tensor) -> Tensor:
        min_pool = -F.max_pool2d(-probs, 3, stride=1, padding=1)
        return F.max_pool2d(min_pool, 3, stride=1, padding=1) - min_pool

    def forward(self, logits: Tensor, valid: Optional[Tensor] = None,
                **kwargs) -> Dict[str, Tensor]:
        contour = self.contour(logits.float().softmax(1)).abs().mean(1)
        return {self.loss_name: self.loss_weight * _valid_mean(contour, valid)}


@MODELS.register_module()
class EMAPseudoLabelLoss(nn.Module):
    """Scribble2Label-style pseudo-label CE from the EMA soft labels (stage 2 only).

    Pixels that are sparsely unlabelled and whose EMA confidence ``max_c w_c`` exceeds
    ``conf_thr`` get the EMA arg-max as target.
    """

    uses_ema = True

    def __init__(self, loss_weight: float = 0.5, conf_thr: float = 0.8, ignore_index: int = 255,
                 loss_name: str = 'loss_ema_pl') -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.conf_thr = conf_thr
        self.ignore_index = ignore_index
        self.loss_name = loss_name

    def forward(self, logits: Tensor, sparse: Tensor, ema: Optional[Tensor] = None,
                valid: Optional[Tensor] = None, stage: int = 1,
                **kwargs) -> Dict[str, Tensor]:
        if stage < 2 or ema is None:
            return {self.loss_name: logits.sum() * 0}
        conf, target = ema.max(1)
        keep = (conf > self.conf_thr) & (sparse == self.ignore_index)
        if valid is not None:
            keep &= valid
        target = target.masked_fill(~keep, self.ignore_index)
        return {self.loss_name: self.loss_weight *
                partial_cross_entropy(logits, target, self.ignore_index)}
