"""ProCNS losses (Liu et al., JBHI 2024): pCE, PRSA, ANPM masking and soft pseudo-labels.

Spec: ``shared/specs/procns.md`` sections 4-5. Notation: ``C`` classes (background included),
logits ``z`` (B, C, H, W), ``P = softmax(z)``, sparse label ``Y^s`` and stored pseudo-label ``Y^``
(B, H, W) with ``ignore_index`` (255 by default) for "unlabelled" (sparse) and "noisy" (ANPM); the
reference uses the value ``C`` for both, which is a config change away (``ignore_index=C``).

Prototype pooling and affinities come from :mod:`protocal.prototypes` (``regional.py``); this file
only
composes them. Everything is batched tensor code (no loop over pixels, windows or class pixels).

Fixes of reference behaviour (each documented in ``configs/procns/README.md``):

* PRSA value: ``sum_{i in U}`` of the kernel instead of ``sum_{all i}`` (trap 7), identical
  gradient;
  ``reference_compat_kernel_sum=True`` restores the reference value.
* Soft target: the kept maximum refined logit is made non-negative, so the arg-max class always gets
  the largest mass (trap 6); ``soft_target='reference'`` keeps the reference rule.
* Empty sets (no labelled pixel, empty ``U`` or ``M``, an absent class) give 0, never NaN.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

from protocal.prototypes.regional import (downsample_label_masks, label_map_prototypes,
                                          local_kernel_config, local_potts_loss,
                                          upsampled_prototype_class_affinity)

__all__ = [
    'partial_cross_entropy', 'prototype_refined_logits', 'soft_pseudo_targets',
    'masked_soft_dice_loss', 'anpm_noise_mask', 'segmentation_dice_counts',
    'lwlr_smooth', 'saturation_epoch', 'ProCNSLoss'
]


def partial_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = 255,
                          valid: Optional[Tensor] = None) -> Tensor:
    """Cross-entropy averaged over labelled pixels (``labels != ignore_index``); 0 if there are
    none.

    Args:
        logits: (B, C, H, W).
        labels: (B, H, W) integer map.
        valid: optional (B, H, W) bool; False pixels are ignored as well.
    """
    labels = labels.long()
    if valid is not None:
        labels = labels.masked_fill(~valid, ignore_index)
    labelled = labels != ignore_index
    if not bool(labelled.any()):
        return logits.sum() * 0
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index,
                                reduction='none')
    return per_pixel.sum() / labelled.sum()


def prototype_refined_logits(logits: Tensor,
                             feats: Sequence[Tensor],
                             proto_labels: Tensor,
                             num_classes: int,
                             per_sample: Sequence[bool] = (False, True),
                             label_resize: str = 'nearest',
                             affinity_resolution: str = 'logits') -> Tuple[Tensor, Tensor]:
    """PRSA prototype-refined logits ``z~ = A * z`` (spec 4.2).

    For each feature map ``F_l`` (detached; ProCNS: encoder level 4 at stride 8 with batch-level
    prototypes, decoder block 3 at stride 2 with per-image prototypes) the label map is reduced to
    the
    feature grid (``label_resize``), class prototypes are pooled, the prototypes of all levels are
    concatenated and L2-normalised (``q``); pixels get ``G = normalise([up(F_1); up(F_2); ...])``
    (bilinear up-sampling to the logits). ``A = relu(cos(G, q)) / sum_c relu(cos)``.

    Args:
        logits: (B, C, H, W) raw logits.
        feats: feature maps (B, D_l, h_l, w_l); detached here.
        proto_labels: (B, H, W) label map the prototypes are pooled from (other values ignored).
        per_sample: for each feature map, per-image (True) or batch-level (False) prototypes.
        label_resize: ``'nearest'`` (reference) or ``'any'`` (see
            :func:`protocal.prototypes.downsample_label_masks`).
        affinity_resolution: ``'logits'`` (reference: ``A`` of the features up-sampled to the
            logits; computed exactly without building the up-sampled embedding, see
            :func:`protocal.prototypes.upsampled_prototype_class_affinity`) or ``'feature'``
            (``A`` on the finest PRSA feature grid, e.g. stride 2, then bilinearly up-sampled;
            differs only by interpolation, kept as an option).

    Returns:
        refined logits (B, C, H, W) (gradient flows through ``logits`` only) and the affinity ``A``.
    """
    if len(per_sample) != len(feats):
        raise ValueError(f'per_sample has {len(per_sample)} entries for {len(feats)} feature maps')
    batch = logits.shape[0]
    size = logits.shape[-2:]
    protos = []
    with torch.no_grad():
        for feat, sample_wise in zip(feats, per_sample):
            feat = feat.detach().float()
            masks = downsample_label_masks(proto_labels, num_classes, feat.shape[-2:],
                                           label_resize)
            proto, _ = label_map_prototypes(feat, masks, per_sample=sample_wise)
            if proto.dim() == 2:
                proto = proto.unsqueeze(0).expand(batch, -1, -1)
            protos.append(proto)
        grid = size if affinity_resolution == 'logits' else max(
            (f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
        # cos(G, q) of the up-sampled, concatenated embedding G without building G (exact)
        affinity = upsampled_prototype_class_affinity([f.detach().float() for f in feats],
                                                      torch.cat(protos, dim=2), tuple(grid))
        if tuple(affinity.shape[-2:]) != tuple(size):
            affinity = F.interpolate(affinity, size=size, mode='bilinear', align_corners=False)
    return affinity.to(logits.dtype) * logits, affinity


def soft_pseudo_targets(refined_logits: Tensor, mode: str = 'positive_max') -> Tensor:
    """Soft pseudo-label ``Q`` for noisy regions (spec 4.4), detached, (B, C, H, W).

    Every entry except the per-pixel maximum of ``z~`` (ties keep all maxima) is set to 0, then
    softmax over classes. ``'reference'``: as written; if the maximum ``m`` is negative the arg-max
    class gets *less* mass than the others (trap 6). ``'positive_max'`` (default): the kept maximum
    is
    ``|m|``, so the arg-max of ``Q`` is the arg-max of ``z~`` and ``Q`` is unchanged when ``m >=
    0``.
    """
    if mode not in ('positive_max', 'reference'):
        raise ValueError(f"mode must be 'positive_max' or 'reference', got {mode!r}")
    z = refined_logits.detach().float()
    peak = z.max(dim=1, keepdim=True).values
    kept = peak.abs() if mode == 'positive_max' else peak
    return torch.where(z == peak, kept.expand_as(z), torch.zeros_like(z)).softmax(dim=1)


def masked_soft_dice_loss(probs: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    """``1 - (2 sum (P M)(Q M) + eps) / (sum P M + sum Q M + eps)`` over batch, classes and pixels.

    ``mask`` (B, H, W) bool selects the pixels (ANPM-noisy ``M``); an empty mask gives exactly 0.
    """
    m = mask.unsqueeze(1).to(probs.dtype)
    pm, qm = probs * m, target.to(probs.dtype) * m
    return 1 - (2 * (pm * qm).sum() + eps) / (pm.sum() + qm.sum() + eps)


def segmentation_dice_counts(pred: Tensor, target: Tensor, num_classes: int,
                             ignore_index: int = 255) -> Tensor:
    """Per-class ``(TP, predicted, target)`` pixel counts, (C, 3) float, ignoring ``ignore_index``.

    The ANPM learning curve (spec 5.2) appends ``Dice_c = 2 TP / (T + P)`` from these counts every
    iteration; pixels whose target is ignored (noisy / unlabelled / padding) count neither as target
    nor as prediction (the reference counted them as predicted positives, trap 9).
    """
    keep = target != ignore_index
    pred_oh = F.one_hot(pred.clamp(0, num_classes - 1).long(), num_classes).bool()
    target_oh = F.one_hot(target.clamp(0, num_classes - 1).long(), num_classes).bool()
    pred_oh &= keep.unsqueeze(-1)
    target_oh &= keep.unsqueeze(-1)
    dims = tuple(range(pred_oh.dim() - 1))
    tp = (pred_oh & target_oh).sum(dims)
    return torch.stack([tp, pred_oh.sum(dims), target_oh.sum(dims)], dim=1).float()


def anpm_noise_mask(probs: Tensor,
                    pseudo: Tensor,
                    released: Tensor,
                    conf_thr: float,
                    ignore_index: int = 255,
                    class_constraint: bool = True,
                    guard_keep_fg: float = 0.5,
                    guard_max_bg: float = 0.95,
                    valid: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """ANPM masking pass on full-image predictions (spec 5.3), vectorised over the batch.

    For each image: ``y^ = argmax P`` with confidence ``p_max``; the change set is
    ``S = {y^ != Y^} & {p_max > conf_thr} & {y^ released} & {Y^ labelled}`` (& ``{y^ in
    unique(Y^)}``
    with ``class_constraint``). An image is skipped (``S`` empty) when ``Y^`` holds no foreground or
    none of the released foreground classes, or by the guard: relabelling ``S`` would leave fewer
    than
    ``guard_keep_fg`` of the current foreground pixels *and* more than ``guard_max_bg`` background.
    The caller sets ``Y^(S) = ignore_index`` (pixels are masked, never relabelled).

    Args:
        probs: (B, C, H, W) softmax of the full image (eval mode).
        pseudo: (B, H, W) stored pseudo-label with ``ignore_index`` on already-masked pixels.
        released: (C,) bool classes whose learning curve saturated (background always released).
        valid: optional (B, H, W) bool (False on padding).

    Returns:
        noisy (B, H, W) bool change set, skipped (B,) bool.
    """
    num_classes = probs.shape[1]
    conf, pred = probs.max(dim=1)
    pseudo = pseudo.long()
    labelled = pseudo != ignore_index
    if valid is not None:
        labelled &= valid
    released = released.to(probs.device).bool().clone()
    released[0] = True
    present = F.one_hot(torch.where(labelled, pseudo, 0), num_classes).bool()
    present &= labelled.unsqueeze(-1)
    present = present.flatten(1, 2).any(1)  # (B, C) classes present in Y^
    has_fg = present[:, 1:].any(1)
    has_released_fg = (present[:, 1:] & released[1:]).any(1)
    change = (pred != pseudo) & labelled & (conf > conf_thr) & released[pred]
    if class_constraint:
        change &= torch.gather(present, 1, pred.flatten(1)).view_as(pred)
    # guard: what relabelling S by the prediction would leave
    new_label = torch.where(change, pred, pseudo)
    fg_now = ((pseudo > 0) & labelled).flatten(1).sum(1).float()
    fg_new = ((new_label > 0) & labelled).flatten(1).sum(1).float()
    bg_new = ((new_label == 0) & labelled).flatten(1).sum(1).float()
    n_lab = labelled.flatten(1).sum(1).float().clamp(min=1)
    guard = (fg_new < guard_keep_fg * fg_now) & (bg_new / n_lab > guard_max_bg)
    skipped = ~has_fg | ~has_released_fg | guard
    return change & ~skipped.view(-1, 1, 1), skipped


# ----------------------------------------------------------------------------------------------
# ANPM learning-curve test (spec 5.2)
# ----------------------------------------------------------------------------------------------
def lwlr_smooth(x: np.ndarray, y: np.ndarray, bandwidth: float) -> np.ndarray:
    """Locally weighted linear regression of ``y(x)`` at every ``x_i``, vectorised (O(n^2)).

    Gaussian weights ``exp(-(x - x_i)^2 / (2 k^2))``; closed-form weighted least squares per point
    from weighted moments (the reference inverts an n x n system per point, O(n^3), trap 3).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.exp(-(x[None, :] - x[:, None]) ** 2 / (2 * bandwidth ** 2))  # (query, sample)
    s0 = w.sum(1)
    sx, sy = w @ x, w @ y
    sxx, sxy = w @ (x * x), w @ (x * y)
    det = s0 * sxx - sx * sx
    safe = np.abs(det) > 1e-12
    slope = np.where(safe, (s0 * sxy - sx * sy) / np.where(safe, det, 1), 0.0)
    intercept = (sy - slope * sx) / np.maximum(s0, 1e-12)
    return intercept + slope * x


def saturation_epoch(history: Sequence[float],
                     iters_per_epoch: int,
                     eval_interval: int = 1,
                     r_threshold: float = 0.95,
                     x_units: str = 'epochs',
                     bandwidth: Optional[float] = None) -> Optional[int]:
    """ADELE-style learning-curve test: the epoch (after warm-up) from which a class may be masked.

    ``y`` = per-iteration Dice history with ``y[0] := 0``, smoothed by :func:`lwlr_smooth`; fit
    ``f(x) = a (1 - exp(-x^b / c))`` (``a, b in [0, 1]``, later points weighted more), probe the
    relative derivative drop ``r(e) = | |f'(e)| - |f'(1)| | / |f'(1)|`` at ``e = 1 .. ceil(E) - 1``;
    the result is ``#{e: r(e) <= r_threshold} + 1``. ``x_units='epochs'`` (default) measures ``x``
    in
    epochs, as ADELE intended; ``'iterations'`` reproduces the reference (``x`` in iterations,
    probed
    at integer "epochs", trap 3). The LWLR bandwidth defaults to Silverman's rule on ``y`` clipped
    to
    the reference's grid range [0.5, 1] (the reference grid-searches a kernel density estimate).

    Returns:
        the epoch, or ``None`` if the history is too short or the fit fails.
    """
    from scipy.optimize import curve_fit
    y = np.asarray(history, dtype=np.float64)
    n = y.shape[0]
    if n < 4:
        return None
    span = n * eval_interval
    x = np.linspace(0, span, n)
    if x_units == 'epochs':
        x = x / iters_per_epoch
    elif x_units != 'iterations':
        raise ValueError(f"x_units must be 'epochs' or 'iterations', got {x_units!r}")
    y = y.copy()
    y[0] = 0.0
    if bandwidth is None:
        std = float(np.std(y))
        bandwidth = float(np.clip(1.06 * std * n ** -0.2 if std > 0 else 1.0, 0.5, 1.0))
    smooth = lwlr_smooth(x, y, bandwidth)
    smooth[0] = 0.0

    def curve(t, a, b, c):
        return a * (1 - np.exp(-np.power(t, b) / c))

    try:
        (a, b, c), _ = curve_fit(curve, x, smooth, p0=(1, 1, 1), method='trf',
                                 sigma=np.geomspace(1, 0.1, n), absolute_sigma=True,
                                 bounds=([0, 0, 0], [1, 1, np.inf]), maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    if c <= 0:
        return None

    def deriv(t):
        t = t + 1e-6
        return a * b / c * np.exp(-np.power(t, b) / c) * np.power(t, b - 1)

    epochs_seen = span / iters_per_epoch
    probes = np.arange(1, max(int(math.ceil(epochs_seen)), 1))
    d1 = abs(deriv(1.0))
    if probes.size == 0 or d1 == 0:
        return None
    r = np.abs(np.abs(deriv(probes.astype(np.float64))) - d1) / d1
    r = np.where(r > 1, 0.0, r)
    return int((r <= r_threshold).sum()) + 1


@MODELS.register_module()
class ProCNSLoss(nn.Module):
    """The ProCNS objective (spec 4.6), one module for both stages.

    Stage 1: ``L = w_pce L_pCE + w_prsa L_PRSA(prototypes from Y^s)``.
    Stage 2: ``L = w_pce L_pCE + w_prsa L_PRSA(prototypes from Y^) + w_soft L_soft(M) + w_pl CE(z,
    Y^)``.
    ``U`` (PRSA destinations) is always the sparsely unlabelled set; ``M = {Y^ = ignore} & valid``.

    Args:
        num_classes: ``C`` (background included).
        ignore_index: unlabelled / noisy value of the label maps.
        pce_weight, prsa_weight, soft_weight, pl_weight: loss weights (1, 0.1, 0.01, 0.5).
        kernel: local kernel arguments (radius 5, sigma_xy 6, sigma_rgb 0.1, weight 1, dilation 1).
        per_sample: for each PRSA feature map, per-image (True) or batch-level (False) prototypes.
        label_resize: ``'nearest'`` (reference) or ``'any'``.
        soft_target: ``'positive_max'`` (fix) or ``'reference'``.
        soft_dice_eps: epsilon of the soft Dice.
        reference_compat_kernel_sum: reproduce the reference PRSA value (constant offset + clamp).
        affinity_resolution: where ``A`` is computed (``'logits'`` = reference, ``'feature'`` =
            finest PRSA feature grid, cheaper; see :func:`prototype_refined_logits`).
        use_prsa: switch PRSA off (ablation).
    """

    #: the segmentor passes backbone features for PRSA
    uses_features = True

    def __init__(self,
                 num_classes: int,
                 ignore_index: int = 255,
                 pce_weight: float = 1.0,
                 prsa_weight: float = 0.1,
                 soft_weight: float = 0.01,
                 pl_weight: float = 0.5,
                 kernel: Optional[dict] = None,
                 per_sample: Sequence[bool] = (False, True),
                 label_resize: str = 'nearest',
                 soft_target: str = 'positive_max',
                 soft_dice_eps: float = 1e-5,
                 reference_compat_kernel_sum: bool = False,
                 affinity_resolution: str = 'logits',
                 use_prsa: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.pce_weight = pce_weight
        self.prsa_weight = prsa_weight
        self.soft_weight = soft_weight
        self.pl_weight = pl_weight
        self.kernel = local_kernel_config(kernel)
        self.per_sample = tuple(per_sample)
        self.label_resize = label_resize
        self.soft_target = soft_target
        self.soft_dice_eps = soft_dice_eps
        self.reference_compat_kernel_sum = reference_compat_kernel_sum
        if affinity_resolution not in ('logits', 'feature'):
            raise ValueError("affinity_resolution must be 'logits' or 'feature', got "
                             f'{affinity_resolution!r}')
        self.affinity_resolution = affinity_resolution
        self.use_prsa = use_prsa

    def forward(self,
                logits: Tensor,
                sparse: Tensor,
                image: Tensor,
                feats: Sequence[Tensor] = (),
                valid: Optional[Tensor] = None,
                pseudo: Optional[Tensor] = None,
                stage: int = 1,
                **kwargs) -> Dict[str, Tensor]:
        """Weighted loss terms (extra keyword arguments, e.g. ``ema``, are ignored).

        Args:
            logits: (B, C, H, W) at input resolution.
            sparse: (B, H, W) sparse label ``Y^s``.
            image: (B, 3, H, W) raw image in [0, 1] for the kernel.
            feats: PRSA feature maps (see :func:`prototype_refined_logits`).
            valid: (B, H, W) bool, False on padding / rotation fill.
            pseudo: (B, H, W) stored pseudo-label ``Y^`` (stage 2).
            stage: 1 or 2.
        """
        if valid is None:
            valid = torch.ones_like(sparse, dtype=torch.bool)
        ign = self.ignore_index
        sparse = sparse.long().masked_fill(~valid, ign)
        losses = {'loss_pce': self.pce_weight * partial_cross_entropy(logits, sparse, ign)}
        stage2 = stage >= 2
        if stage2 and pseudo is None:
            raise ValueError('ProCNSLoss stage 2 needs the stored pseudo-labels (pseudo=None)')
        if stage2:
            pseudo = pseudo.long().masked_fill(~valid, ign)
        if self.use_prsa and self.prsa_weight > 0:
            proto_labels = pseudo if stage2 else sparse
            refined, _ = prototype_refined_logits(logits, feats, proto_labels, self.num_classes,
                                                  self.per_sample, self.label_resize,
                                                  self.affinity_resolution)
            unlabelled = (sparse == ign) & valid
            losses['loss_prsa'] = self.prsa_weight * local_potts_loss(
                refined.float().softmax(1), image, unlabelled, valid=valid,
                reference_compat_kernel_sum=self.reference_compat_kernel_sum, **self.kernel)
        else:
            refined = logits
        if stage2:
            noisy = (pseudo == ign) & valid
            target = soft_pseudo_targets(refined, self.soft_target)
            losses['loss_soft'] = self.soft_weight * masked_soft_dice_loss(
                logits.float().softmax(1), target, noisy, self.soft_dice_eps)
            losses['loss_pl'] = self.pl_weight * partial_cross_entropy(logits, pseudo, ign)
        return losses
