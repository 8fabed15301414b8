"""LPD losses (Le et al., "Learnable Prototypes with Diversity regularization", ISBI).

Three registered losses (mmseg ``MODELS``), each with ``loss_weight`` and ``loss_name``:

* :class:`MultiStageBCELoss` -- ``L_cls = sum_s l_s * BCE(Z_s, y)`` over backbone stages.
* :class:`PrototypeInfoNCELoss` -- ``L_sim``: foreground / background InfoNCE between frozen-encoder
  embeddings of CAM-masked images and the raw learnable prototypes, plus the activation
  regulariser ``5e-4 * mean(cam4)`` (inside the ``lambda_sim`` bracket, as in the reference).
* :class:`PrototypeDiversityLoss` -- ``L_div``: Jeffrey's-divergence similarity between the pixel
  distributions of one class's prototypes (the paper's loss), or the reference's first-commit
  spatial-correlation regulariser (``variant='corr'``).

Reference bugs are fixed by default; ``reference_compat_*`` switches restore them for parity
(see ``configs/lpd/README.md``). Prototype similarities come from :mod:`protocal.prototypes`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...prototypes import class_slices, normalize_features, prototype_cosine

__all__ = [
    'MultiStageBCELoss', 'PrototypeInfoNCELoss', 'PrototypeDiversityLoss', 'info_nce_fg',
    'info_nce_bg', 'jeffreys_similarity'
]


@MODELS.register_module()
class MultiStageBCELoss(nn.Module):
    """``L_cls = loss_weight * sum_s l_s * BCEWithLogits(Z_s, y)`` (mean over batch and classes).

    Stages with weight 0 are multiplied by 0 rather than skipped, so their parameters stay in the
    graph (DistributedDataParallel rejects parameters without gradient).

    Args:
        stage_weights: ``(l_1, ..., l_S)``; LPD: ``(0.0, 0.1, 1.0, 1.0)``.
    """

    def __init__(self, stage_weights: Sequence[float] = (0.0, 0.1, 1.0, 1.0),
                 loss_weight: float = 1.0, loss_name: str = 'loss_cls') -> None:
        super().__init__()
        self.stage_weights = tuple(float(w) for w in stage_weights)
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self, stage_logits: Sequence[Tensor], labels: Tensor) -> Tensor:
        if len(stage_logits) != len(self.stage_weights):
            raise ValueError(f'{len(stage_logits)} stages of logits but {len(self.stage_weights)} '
                             f'stage weights')
        labels = labels.float()
        total = stage_logits[0].new_zeros(())
        for weight, logits in zip(self.stage_weights, stage_logits):
            total = total + weight * F.binary_cross_entropy_with_logits(logits, labels)
        return self.loss_weight * total

    @property
    def loss_name(self) -> str:
        return self._loss_name


def info_nce_fg(embeddings: Tensor, prototypes: Tensor, positive: Tensor,
                temperature: float = 0.07) -> Tensor:
    """Per-pair foreground InfoNCE: ``-log softmax_j(<e, P_j> / t)[k]`` (all vectors normalised).

    Args:
        embeddings: (N, D) embeddings of the foreground-masked images.
        prototypes: (M, D) raw prototypes.
        positive: (N,) int64 index ``k`` of each pair's prototype; every other prototype (siblings
            of the same class included) is a negative.

    Returns:
        (N,) losses.
    """
    logits = prototype_cosine(embeddings.t().unsqueeze(0), prototypes)[0].t() / temperature
    return F.cross_entropy(logits, positive, reduction='none')


def info_nce_bg(embeddings: Tensor, prototypes: Tensor, positive: Tensor,
                temperature: float = 0.07) -> Tensor:
    """Per-pair background InfoNCE with multiple positives.

    ``-log( sum_{j != k} e^{<e, P_j>/t} / sum_j e^{<e, P_j>/t} )``: the background-masked image
    should look like any prototype except its own ``P_k``.
    """
    logits = prototype_cosine(embeddings.t().unsqueeze(0), prototypes)[0].t() / temperature
    own = F.one_hot(positive, logits.shape[1]).bool()
    others = logits.masked_fill(own, float('-inf'))
    return torch.logsumexp(logits, 1) - torch.logsumexp(others, 1)


@MODELS.register_module()
class PrototypeInfoNCELoss(nn.Module):
    """``L_sim = loss_weight * (mean L_fg + mean L_bg + activation_weight * mean(cam4))``.

    Args:
        temperature: InfoNCE temperature (0.07).
        activation_weight: weight of the mean stage-4 activation inside the bracket (5e-4).
        loss_weight: ``lambda_sim`` (0.1).
    """

    def __init__(self, temperature: float = 0.07, activation_weight: float = 5e-4,
                 loss_weight: float = 0.1, loss_name: str = 'loss_sim') -> None:
        super().__init__()
        self.temperature = temperature
        self.activation_weight = activation_weight
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self, fg_embeddings: Tensor, bg_embeddings: Tensor, prototypes: Tensor,
                positive: Tensor, activation: Optional[Tensor] = None,
                weights: Optional[Tensor] = None) -> Tensor:
        """Embeddings (N, D) of the foreground / background-masked images of the N selected
        (image, prototype) pairs; ``positive`` (N,) their prototype index; ``activation`` the raw
        stage-4 CAM (any shape) whose mean is regularised. N = 0 gives 0 (with a graph).

        ``weights`` (N,): per-pair weights replacing the mean over pairs (``sum_i w_i L_i``), for a
        subsample of the selected pairs whose weights make it an unbiased estimate of the mean
        over all of them (``LPDSegmentor.sim_pairs_per_image``). None = plain mean."""
        if positive.numel() == 0:
            return prototypes.sum() * 0.0
        fg = info_nce_fg(fg_embeddings, prototypes, positive, self.temperature)
        bg = info_nce_bg(bg_embeddings, prototypes, positive, self.temperature)
        if weights is None:
            fg, bg = fg.mean(), bg.mean()
        else:
            if weights.shape != fg.shape:
                raise ValueError(f'weights of shape {tuple(weights.shape)} for {fg.numel()} pairs')
            fg, bg = (weights * fg).sum(), (weights * bg).sum()
        total = fg + bg
        if activation is not None and self.activation_weight:
            total = total + self.activation_weight * activation.mean()
        return self.loss_weight * total

    @property
    def loss_name(self) -> str:
        return self._loss_name


def jeffreys_similarity(dists: Tensor, eps: float = 1e-10) -> Tensor:
    """Mean pairwise ``exp(-J_ij)`` of K distributions, ``J_ij = KL(v_i||v_j) + KL(v_j||v_i)``.

    ``eps`` is added to both vectors before the logarithms, as in the reference.

    Args:
        dists: (K, n) rows are distributions.

    Returns:
        scalar: mean over the ``K (K - 1) / 2`` pairs ``i < j``; 0 when ``K < 2``.
    """
    num = dists.shape[0]
    if num < 2:
        return dists.sum() * 0.0
    p = dists + eps
    logp = p.log()
    # cross[i, j] = sum_n p_i log p_j ; KL(i||j) = cross[i, i] - cross[i, j]
    cross = p @ logp.t()
    self_term = cross.diagonal()
    kl = self_term[:, None] - cross
    jeff = kl + kl.t()
    iu = torch.triu_indices(num, num, offset=1, device=dists.device)
    return torch.exp(-jeff[iu[0], iu[1]]).mean()


@MODELS.register_module()
class PrototypeDiversityLoss(nn.Module):
    """``L_div``: keep the K prototypes of one class apart (LPD).

    Inputs: stage-4 features ``F4`` (B, D, h, w), the prototype bank (C*K, D) (raw, class-major)
    and a pseudo mask (B, h, w) with ``0`` = background and ``c + 1`` = class ``c`` (LPD builds it
    as ``argmax([0.2, mean-merge(cam4)])`` under ``no_grad``).

    ``variant='jeffreys'`` (the paper's loss, LPD HEAD): for each image ``b`` and class ``c`` with
    pixels ``Omega_bc``: ``v_k = softmax_{p in Omega_bc}(cos(F4(p), P_k) / temperature)`` for the
    class's prototypes ``k``, ``L_bc = mean_{i<j} exp(-J(v_i, v_j))``; ``L_b`` = mean over the
    classes present in ``b``; ``L = sum_b L_b / B`` (images without any class count in ``B``). ``K = 1``
    gives 0.

    ``variant='corr'`` (reference first commit): windowed region similarities of the class's
    prototypes, centred and normalised columns ``A``; ``G = A^T A / N``; loss
    ``sum_{i != j} G_ij^2 / (K (K - 1))``; mean over classes, sum over images / B.

    Args:
        num_per_class: K (int or per-class sequence); set by the segmentor if None.
        variant: ``'jeffreys'`` or ``'corr'``.
        temperature: divides the cosine before the pixel softmax (1.0 = the reference; the
            distributions are then nearly flat, see the README).
        reference_compat_label_offset: use ``mask == c`` for class ``c`` (the reference's index
            bug: prototype group 0 is regularised on background pixels, NEC never). Default False:
            ``mask == c + 1``.
        reference_compat_double_softmax: apply the reference's second softmax to ``v_k``
            (makes ``v`` almost uniform, ``J ~ 0``, loss ~ 1 with tiny gradients).
        omega_window, omega_min_mass: ``'corr'`` variant window and minimum class mass.
    """

    def __init__(self,
                 num_per_class=None,
                 variant: str = 'jeffreys',
                 temperature: float = 1.0,
                 reference_compat_label_offset: bool = False,
                 reference_compat_double_softmax: bool = False,
                 omega_window: int = 7,
                 omega_min_mass: float = 0.05,
                 eps: float = 1e-10,
                 loss_weight: float = 0.5,
                 loss_name: str = 'loss_div') -> None:
        super().__init__()
        if variant not in ('jeffreys', 'corr'):
            raise ValueError(f"variant must be 'jeffreys' or 'corr', got {variant!r}")
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.num_per_class = num_per_class
        self.variant = variant
        self.temperature = temperature
        self.reference_compat_label_offset = reference_compat_label_offset
        self.reference_compat_double_softmax = reference_compat_double_softmax
        self.omega_window = omega_window
        self.omega_min_mass = omega_min_mass
        self.eps = eps
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def _class_value(self, c: int) -> int:
        return c if self.reference_compat_label_offset else c + 1

    def forward(self, feats: Tensor, prototypes: Tensor, pseudo_mask: Tensor) -> Tensor:
        if self.num_per_class is None:
            raise ValueError('PrototypeDiversityLoss.num_per_class is not set')
        batch, dims = feats.shape[:2]
        if prototypes.shape[1] != dims:
            raise ValueError(f'L_div compares F4 ({dims} channels) with prototypes of dim '
                             f'{prototypes.shape[1]}; they must match')
        if pseudo_mask.shape[-2:] != feats.shape[-2:]:
            pseudo_mask = F.interpolate(pseudo_mask[:, None].float(), size=feats.shape[-2:],
                                        mode='nearest')[:, 0].long()
        slices = class_slices(self.num_per_class,
                              None if not isinstance(self.num_per_class, int) else
                              prototypes.shape[0] // self.num_per_class)
        fn = self._jeffreys if self.variant == 'jeffreys' else self._corr
        total = feats.sum() * 0.0 + prototypes.sum() * 0.0  # keeps a graph when nothing is present
        for b in range(batch):
            per_class = []
            for c, sl in enumerate(slices):
                if sl.stop - sl.start < 2:
                    continue
                region = pseudo_mask[b] == self._class_value(c)
                if not bool(region.any()):
                    continue
                value = fn(feats[b], prototypes[sl], region)
                if value is not None:
                    per_class.append(value)
            if per_class:
                total = total + torch.stack(per_class).mean()
        return self.loss_weight * total / max(batch, 1)

    def _jeffreys(self, feat: Tensor, protos: Tensor, region: Tensor) -> Tensor:
        pixels = feat.flatten(1)[:, region.flatten()]  # (D, n)
        cos = prototype_cosine(pixels.unsqueeze(0), protos)[0]  # (K, n)
        dists = (cos / self.temperature).softmax(1)
        if self.reference_compat_double_softmax:
            dists = dists.softmax(1)
        return jeffreys_similarity(dists, self.eps)

    def _corr(self, feat: Tensor, protos: Tensor, region: Tensor) -> Optional[Tensor]:
        win = self.omega_window
        sim = prototype_cosine(feat.flatten(1).unsqueeze(0), protos)[0]  # (K, N)
        sim = sim.reshape(-1, *feat.shape[-2:])
        omega = region.to(sim.dtype)[None]
        mass = F.avg_pool2d(omega[None], win, stride=1, padding=win // 2,
                            count_include_pad=True)[0]
        region_sim = F.avg_pool2d((sim * omega)[None], win, stride=1, padding=win // 2,
                                  count_include_pad=True)[0] / (mass + 1e-8)
        valid = (mass[0] > self.omega_min_mass)
        if int(valid.sum()) < 2:
            return None
        cols = region_sim[:, valid].t()  # (N, K)
        cols = cols - cols.mean(0, keepdim=True)
        cols = normalize_features(cols, dim=0, eps=1e-8)
        gram = cols.t() @ cols / cols.shape[0]
        num = gram.shape[0]
        off = gram - torch.diag_embed(gram.diagonal())
        return off.pow(2).sum() / (num * (num - 1))
