"""Soft (heatmap) cross-entropy: the plain baseline and the kernel every calibrated loss reuses."""
import contextlib
import functools
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from protocal.prototypes.energy import interpolation_weights

__all__ = [
    'soft_cross_entropy_map', 'reduce_over_pixels', 'zero_loss', 'fused_soft_ce', 'fp32_region',
    'SoftCrossEntropyLoss'
]

#: default of the ``fused`` option of the heatmap losses
FUSED_DEFAULT = True

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


# ---------------------------------------------------------------------------------------------
# Fused path: one pass over the logits, a few rows at a time.
#
# The composed path above materialises several full-resolution (B, C, H, W) float32 tensors that
# autograd keeps until backward (log-softmax, the clipped copy, the negated target, the product,
# the upsampled energies and their product with the cross-entropy map), and the Exclusive Loss
# computes a second softmax of the same logits. The fused path computes the same sums row block by
# row block and keeps nothing at full resolution except the gradient of the logits:
#
# * only the background term ``Y_0 ln P_0 E_0`` is dense; the foreground targets are zero outside
#   the annotated discs, so the foreground terms (and the Exclusive Loss, whose region is the same
#   discs) are computed on the gathered disc pixels only;
# * the forward pulls the per-pixel cross-entropy back to the node grid (``A_h^T CE A_w`` with the
#   separable resampling matrices of :func:`protocal.prototypes.interpolation_weights`), so the
#   energy gradient is a node-level product and no pixel energy map is ever built;
# * the backward recomputes the softmax of each block and upsamples the energies of that block
#   only (dL/dz_c = (1[c = 0] - P_c) g_0 with g_0 = Y_0 E_0 dL/dce / N, plus the disc terms).
# ---------------------------------------------------------------------------------------------

#: elements (C x rows x W) per block; small enough to stay in cache on CPU
CPU_CHUNK_ELEMS = 1 << 19
CUDA_CHUNK_ELEMS = 1 << 24
#: the reference clips probabilities to [1e-10, 1] in the Exclusive Loss
PROB_FLOOR = 1e-10


def fp32_region(device: torch.device):
    """Context in which autocast is off (energies, affinities and losses run in float32)."""
    try:
        return torch.autocast(device_type=torch.device(device).type, enabled=False)
    except (RuntimeError, ValueError):  # a device type without autocast support
        return contextlib.nullcontext()


@functools.lru_cache(maxsize=64)
def _row_blocks(height: int, rows: int, grid_h: int = 0,
                upsample: str = 'bilinear') -> Tuple[Tuple[int, int, int, int], ...]:
    """(r0, r1, j0, j1): pixel rows [r0, r1) and the node rows [j0, j1) their energies read."""
    a_h = interpolation_weights(grid_h, height, upsample) if grid_h else None
    blocks = []
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        j0 = j1 = 0
        if a_h is not None:
            support = (a_h[r0:r1] != 0).any(0).nonzero()
            j0, j1 = int(support.min()), int(support.max()) + 1
        blocks.append((r0, r1, j0, j1))
    return tuple(blocks)


@functools.lru_cache(maxsize=64)
def _axis_taps(in_size: int, out_size: int, mode: str, device: str) -> Tuple[Tensor, Tensor]:
    """The (at most two) source nodes and weights of every pixel along one axis, (out, k)."""
    weights, index = interpolation_weights(in_size, out_size, mode, device).topk(
        min(2, in_size), dim=1)
    return index, weights


def _node_taps(idx: Tensor, shape: Tuple[int, int], grid: Tuple[int, int], mode: str):
    """Nodes (T, n) and weights (T, n) whose blend is the pixel energy at flat pixels ``idx``."""
    (height, width), (grid_h, grid_w) = shape, grid
    dev = str(idx.device)
    ih, wh = (t[idx // width] for t in _axis_taps(grid_h, height, mode, dev))  # (n, kh)
    iw, ww = (t[idx % width] for t in _axis_taps(grid_w, width, mode, dev))  # (n, kw)
    nodes = (ih[:, :, None] * grid_w + iw[:, None, :]).flatten(1).t()  # (kh * kw, n)
    weights = (wh[:, :, None] * ww[:, None, :]).flatten(1).t()
    return nodes, weights


def _support_pixels(y: Tensor, valid: Optional[Tensor], offset: int) -> Optional[Tensor]:
    """Flat (image) indices of the valid pixels of a block where a foreground target is non-zero.

    Everywhere else only the background channel contributes to the cross-entropy.
    """
    fg = y[1].abs()
    for c in range(2, y.shape[0]):
        torch.maximum(fg, y[c].abs(), out=fg)
    if valid is not None:
        fg.mul_(valid[0])
    # rows first (a cheap float reduction), then the pixels of the rows that have any
    rows = (fg.amax(1) > 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return None
    width = fg.shape[1]
    cols = fg.index_select(0, rows).view(-1).nonzero().squeeze(1)
    return rows[cols // width] * width + cols % width + offset


def _flat_image(tensor: Tensor, b: int) -> Tensor:
    """Image ``b`` of a (B, C, H, W) tensor as (C, H * W) (a view when possible)."""
    return tensor[b].reshape(tensor.shape[1], -1)


class _FusedSoftCE(torch.autograd.Function):
    """Energy-weighted soft cross-entropy and Exclusive Loss sums; see :func:`fused_soft_ce`.

    ``sum_c Y_c ln P_c E_c`` is split into the background term ``Y_0 ln P_0 E_0``, computed on
    every pixel in row blocks, and the foreground terms, which are non-zero only on the support
    ``S`` of the foreground targets (the annotated discs): those are computed on the gathered
    support pixels, together with the Exclusive Loss (whose region is the part of ``S`` where a
    target is positive).
    """

    @staticmethod
    def forward(ctx, logits, target, node_energy, valid, upsample, with_ce, exclusive,
                negative_bg, chunk_elems):
        batch, channels, height, width = logits.shape
        device = logits.device
        with fp32_region(device):
            a_h = a_w = q = None
            grid = (0, 0)
            if node_energy is not None and with_ce:
                grid = tuple(node_energy.shape[-2:])
                a_h = interpolation_weights(grid[0], height, upsample, device)
                a_w = interpolation_weights(grid[1], width, upsample, device)
                q = torch.zeros(node_energy.shape, dtype=torch.float64, device=device)
            rows = max(1, min(height, chunk_elems // max(1, channels * width)))
            blocks = _row_blocks(height, rows, grid[0], upsample)
            clipped = []  # per block: ln P_0 below the floor somewhere
            parts = [[] for _ in range(batch)]
            # sum_p sum_c Y_c ln P_c (weighted); negated at the end
            ce_sum = torch.zeros((), dtype=torch.float64, device=device)
            for b in range(batch):
                for r0, r1, j0, j1 in blocks:
                    y = target[b, :, r0:r1]
                    v = valid[b, :, r0:r1] if valid is not None else None
                    idx = _support_pixels(y, v, r0 * width) if channels > 1 else None
                    if idx is not None:
                        parts[b].append(idx)
                    if not with_ce:
                        continue
                    lp0 = torch.log_softmax(logits[b, :, r0:r1].float(), dim=0)[:1]
                    clip = bool(lp0.min() < LOG_PROB_FLOOR)  # rare: skip the mask otherwise
                    clipped.append(clip)
                    if clip:
                        lp0 = lp0.clamp(min=LOG_PROB_FLOOR)
                    per = lp0 * y[:1]  # (1, R, W)
                    if v is not None:
                        per.mul_(v)
                    if q is None:
                        ce_sum += per.sum()
                    else:
                        q[b, :1, j0:j1] += a_h[r0:r1, j0:j1].t().matmul(per).matmul(a_w)
            supports, el_terms = [], []
            for b in range(batch):
                if not parts[b]:
                    supports.append(None)
                    continue
                idx = torch.cat(parts[b]) if len(parts[b]) > 1 else parts[b][0]
                y_s = _flat_image(target, b).index_select(1, idx).float()  # (C, n)
                lp_s = torch.log_softmax(_flat_image(logits, b).index_select(1, idx).float(), 0)
                taps = None
                if with_ce:
                    fg_ce = lp_s[1:].clamp(min=LOG_PROB_FLOOR).mul_(y_s[1:])  # (K, n)
                    if q is None:
                        ce_sum += fg_ce.sum()
                    else:
                        taps = _node_taps(idx, (height, width), grid, upsample)
                        q_b = q[b].view(q.shape[1], -1)
                        for nodes, weights in zip(*taps):
                            part = (fg_ce * weights).double()
                            if q.shape[1] == 1:
                                q_b.index_add_(1, nodes, part.sum(0, keepdim=True))
                            else:
                                q_b[1:].index_add_(1, nodes, part)
                not_hard, area = None, 0
                if exclusive:
                    positive = y_s[1:] > 0  # (K, n)
                    region = positive.any(0)
                    area = int(region.sum())
                    if area:
                        # inside the region sum_c H_c >= 1, so 1 - H_0 = 1 (H_0 clamped at 0)
                        # or sum_c H_c (reference); zero outside the region
                        bg = positive.sum(0, keepdim=True).float() if negative_bg else \
                            torch.ones_like(region, dtype=torch.float32)[None]
                        not_hard = torch.cat([bg, (~positive).float()], 0) * region
                        probs = lp_s.exp().clamp_(PROB_FLOOR, 1)
                        el_terms.append((not_hard * probs.log1p()).sum() / area)
                supports.append((idx, taps, not_hard, area))
            if valid is None:
                denom = float(batch * height * width)
            else:
                denom = float(valid.sum().clamp(min=1))
            if q is not None:
                q = q.neg_()
                ce_out = ((node_energy.double() * q).sum() / denom).float()
            else:
                ce_out = (-ce_sum / denom).float()
            el_out = torch.zeros((), dtype=torch.float32, device=device)
            if el_terms:
                el_out = torch.stack(el_terms).mean().float()
        ctx.save_for_backward(logits, target, node_energy, valid)
        ctx.cfg = (with_ce, upsample, blocks, clipped, denom, supports, len(el_terms))
        ctx.q = q
        return ce_out, el_out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ce, grad_el):
        logits, target, node_energy, valid = ctx.saved_tensors
        with_ce, upsample, blocks, clipped, denom, supports, num_present = ctx.cfg
        grad_logits = grad_energy = None
        device = logits.device
        with fp32_region(device):
            ce_scale = -grad_ce.float() / denom
            if ctx.q is not None and ctx.needs_input_grad[2]:
                grad_energy = (ctx.q * (grad_ce.double() / denom)).to(node_energy.dtype)
            if not ctx.needs_input_grad[0]:
                return None, None, grad_energy, None, None, None, None, None, None
            batch, channels, height, width = logits.shape
            grad_logits = torch.empty(logits.shape, dtype=logits.dtype, device=device)
            if not with_ce:
                grad_logits.zero_()
            ew = energy = None
            if ctx.q is not None:
                a_h = interpolation_weights(node_energy.shape[-2], height, upsample, device)
                a_w = interpolation_weights(node_energy.shape[-1], width, upsample, device)
                energy = node_energy.float() * ce_scale  # pre-multiplied by -dL/dce / denom
                ew = energy[:, :1].matmul(a_w.t())  # background energy along columns (B,1,h,W)
            k = 0
            for b in range(batch if with_ce else 0):
                for r0, r1, j0, j1 in blocks:
                    z = logits[b, :, r0:r1].float()
                    y0 = target[b, :1, r0:r1]
                    # upstream gradient of ln P_0 (the only dense term): g0 = Y_0 E_0 * scale
                    if ew is not None:
                        g0 = a_h[r0:r1, j0:j1].matmul(ew[b, :, j0:j1]).mul_(y0)
                    else:
                        g0 = y0 * ce_scale
                    if valid is not None:
                        g0.mul_(valid[b, :, r0:r1])
                    if clipped[k]:
                        g0.masked_fill_(torch.log_softmax(z, 0)[:1] < LOG_PROB_FLOOR, 0)
                    k += 1
                    out = grad_logits[b, :, r0:r1]
                    torch.mul(torch.softmax(z, dim=0), g0.neg(), out=out)  # -P_c g0
                    out[0].add_(g0[0])  # + g0 on channel 0 (log-softmax backward)
            for b, found in enumerate(supports):
                if found is None:
                    continue
                idx, taps, not_hard, area = found
                lp_s = torch.log_softmax(_flat_image(logits, b).index_select(1, idx).float(), 0)
                probs = lp_s.exp()
                grad = torch.zeros_like(lp_s)
                if with_ce:
                    y_fg = _flat_image(target, b)[1:].index_select(1, idx).float()
                    if taps is not None:  # foreground energies at the support pixels
                        e_b = energy[b].reshape(energy.shape[1], -1)
                        e_b = e_b if e_b.shape[0] == 1 else e_b[1:]
                        weight = sum(e_b.index_select(1, n) * w for n, w in zip(*taps))
                        g_fg = y_fg.mul_(weight)
                    else:
                        g_fg = y_fg.mul_(ce_scale)
                    g_fg.masked_fill_(lp_s[1:] < LOG_PROB_FLOOR, 0)
                    grad[1:] = g_fg
                    grad.sub_(probs * g_fg.sum(0, keepdim=True))  # log-softmax backward
                if not_hard is not None:
                    inside = (probs >= PROB_FLOOR) & (probs <= 1)
                    scale = grad_el.float() / (num_present * area)
                    ge = not_hard * scale / (1 + probs.clamp(PROB_FLOOR, 1)) * inside
                    grad.add_(probs * (ge - (ge * probs).sum(0, keepdim=True)))  # softmax bwd
                grad_logits[b].view(channels, -1).index_add_(1, idx, grad.to(logits.dtype))
        return grad_logits, None, grad_energy, None, None, None, None, None, None


def fused_soft_ce(logits: Tensor,
                  target: Tensor,
                  node_energy: Optional[Tensor] = None,
                  valid_mask: Optional[Tensor] = None,
                  upsample: str = 'bilinear',
                  with_ce: bool = True,
                  exclusive: bool = False,
                  exclusive_negative_bg: bool = False,
                  chunk_elems: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Energy-weighted soft cross-entropy (and Exclusive Loss) without full-resolution temporaries.

    Returns ``(ce, el)`` (float32 scalars, unweighted), equal (up to float rounding) to

    * ``ce = reduce_over_pixels(soft_cross_entropy_map(logits, target) * E, valid_mask)`` with
      ``E = energy_to_pixels(node_energy, ..., mode=upsample)`` (``E = 1`` when ``node_energy`` is
      None): the plain, SEL and PCL cross-entropies;
    * ``el``: the :class:`~protocal.models.losses.ExclusiveLoss` mean before ``loss_weight``
      (0 when no image has an annotated disc).

    Gradients flow to ``logits`` and ``node_energy``. The computation runs in float32 with autocast
    off whatever the logits' dtype; the logits' gradient has the logits' dtype.

    Args:
        logits: (B, C, H, W).
        target: (B, C, H, W) soft target.
        node_energy: (B, 1, h, w) (one map for every channel) or (B, C, h, w), or None.
        valid_mask: (B, 1, H, W) bool, False on padding.
        upsample: ``'bilinear'`` or ``'nearest'`` resampling of the node energies.
        with_ce: compute the cross-entropy (False: Exclusive Loss only, ``ce = 0``).
        exclusive: compute the Exclusive Loss.
        exclusive_negative_bg: the reference's ``H_0 = -1`` where two classes' discs overlap.
        chunk_elems: elements per row block (default: 2^19 on CPU, 2^24 on CUDA).
    """
    if logits.shape != target.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and target {tuple(target.shape)} '
                         'must have the same shape (B, K+1, H, W)')
    if node_energy is not None:
        if node_energy.dim() != 4 or node_energy.shape[0] != logits.shape[0] or \
                node_energy.shape[1] not in (1, logits.shape[1]):
            raise ValueError(f'node_energy must be (B, 1 or C, h, w) for logits '
                             f'{tuple(logits.shape)}, got {tuple(node_energy.shape)}')
    exclusive = exclusive and logits.shape[1] > 1  # no foreground channel: no disc
    if chunk_elems is None:
        chunk_elems = CUDA_CHUNK_ELEMS if logits.device.type == 'cuda' else CPU_CHUNK_ELEMS
    return _FusedSoftCE.apply(logits, target, node_energy, valid_mask, upsample, with_ce,
                              exclusive, exclusive_negative_bg, int(chunk_elems))


@MODELS.register_module()
class SoftCrossEntropyLoss(nn.Module):
    """Plain heatmap loss: ``mean_{b,y,x} sum_c -Y_c ln P_c`` on the sparse soft target.

    With sparse annotation this treats every unannotated cell as background; SEL and PCL calibrate
    exactly this term. Accepts (and ignores) the embedding arguments so every heatmap loss has the
    same call signature (see ``docs/architecture.md``).

    Args:
        loss_weight: multiplier of the returned loss.
        loss_name: key of the returned loss.
        fused: compute it with :func:`fused_soft_ce` (same value and gradient, no
            full-resolution temporaries); ``False`` keeps the composed reference path.
    """

    #: heads skip the node-embedding branch for losses that do not read it (otherwise its
    #: parameters get no gradient, which DistributedDataParallel rejects)
    uses_embeddings = False

    def __init__(self,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_ce',
                 fused: bool = FUSED_DEFAULT):
        super().__init__()
        self.loss_weight = loss_weight
        self.loss_name = loss_name
        self.fused = fused

    def forward(self,
                logits: Tensor,
                target: Tensor,
                embed: Optional[Tensor] = None,
                node_masks: Optional[Tensor] = None,
                valid_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        if self.fused:
            loss = fused_soft_ce(logits, target, valid_mask=valid_mask)[0]
        else:
            loss = reduce_over_pixels(soft_cross_entropy_map(logits, target), valid_mask)
        return {self.loss_name: self.loss_weight * loss}
