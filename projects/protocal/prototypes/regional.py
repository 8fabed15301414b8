"""Dense (pixel-level) prototypes and local affinities for segmentation from sparse labels.

Extends the shared prototype core to label *maps* (ProCNS and the WSL4MIS baselines): class
prototypes pooled from a label map with masked sums, prototype-to-pixel class affinities, and a
local (windowed) image affinity kernel with the Gated-CRF / Potts energy built on it. All functions
are tensor code without Python loops over pixels, windows or classes (the fast Potts loss,
:func:`local_potts_loss`, processes one image of the batch at a time to bound its memory); shapes
use

* ``B`` images, ``C`` classes (background included), ``D`` feature channels,
* ``H, W`` pixel grid of the prediction, ``h, w`` a feature grid,
* ``k2 = (2 r + 1) ** 2`` window positions of a local kernel (centre included, with weight 0).

Label maps hold class indices ``0 .. C - 1``; every other value (``ignore_index``, e.g. 255 for
"unlabelled" or "noisy") never contributes to a prototype.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .affinity import NORM_EPS, masked_mean_features, normalize_features
from .energy import interpolation_weights

__all__ = [
    'label_map_to_masks', 'downsample_label_masks', 'label_map_prototypes',
    'prototype_class_affinity', 'upsampled_prototype_class_affinity', 'local_affinity_kernel',
    'unfold_windows', 'local_prediction_agreement', 'potts_affinity_loss', 'local_potts_loss',
    'local_kernel_config'
]


def label_map_to_masks(labels: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) integer label map -> (B, C, H, W) bool one-hot masks.

    Values outside ``0 .. C - 1`` (ignore / unlabelled / noisy) give an all-False column.
    """
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, 1, 1)
    return labels.long().unsqueeze(1) == classes


def downsample_label_masks(labels: Tensor, num_classes: int, size: Tuple[int, int],
                           mode: str = 'nearest') -> Tensor:
    """Class masks of a label map at a feature resolution, (B, C, h, w) bool.

    Args:
        labels: (B, H, W) label map.
        num_classes: ``C``.
        size: ``(h, w)`` target grid.
        mode: ``'nearest'`` (reference: nearest interpolation of the label map, so thin
            scribbles and single points can vanish at stride 8, trap 5) or ``'any'`` (a cell
            holds class ``c`` when
            any of its pixels does: adaptive max-pooling of the one-hot masks; a cell may then hold
            several classes).
    """
    if mode == 'nearest':
        small = F.interpolate(labels[:, None].float(), size=tuple(size), mode='nearest')[:, 0]
        return label_map_to_masks(small.long(), num_classes)
    if mode == 'any':
        masks = label_map_to_masks(labels, num_classes).float()
        return F.adaptive_max_pool2d(masks, tuple(size)) > 0
    raise ValueError(f"mode must be 'nearest' or 'any', got {mode!r}")


def label_map_prototypes(feats: Tensor, masks: Tensor, per_sample: bool = True
                         ) -> Tuple[Tensor, Tensor]:
    """Mean feature of each class region: per image (B, C, D) or over the batch (C, D).

    ``q_c = sum_x F(x) 1[x in c] / max(1, sum_x 1[x in c])``, computed as one masked sum (einsum),
    never
    as a (C, B, D, H, W) tensor (trap 13). Empty classes give zero prototypes (no NaN).

    Args:
        feats: (B, D, h, w) features.
        masks: (B, C, h, w) bool class masks at the same grid.
        per_sample: True: one prototype per image and class; False: one per class for the batch.

    Returns:
        prototypes, present: ``(B, C, D), (B, C)`` or ``(C, D), (C,)``.
    """
    flat_feats = feats.flatten(2)
    flat_masks = masks.flatten(2)
    if per_sample:
        return masked_mean_features(flat_feats, flat_masks)
    weights = flat_masks.to(flat_feats.dtype)
    total = torch.einsum('bcn,bdn->cd', weights, flat_feats)
    count = weights.sum((0, 2))
    return total / count.clamp(min=1).unsqueeze(-1), count > 0


def prototype_class_affinity(embed: Tensor, prototypes: Tensor, eps: float = 1e-10) -> Tensor:
    """Normalised positive cosine affinity of every pixel to every class prototype, (B, C, H, W).

    ``s_c(x) = max(0, cos(G(x), q_c))``, ``A_c(x) = s_c(x) / max(sum_k s_k(x), eps)``: ``A`` sums
    to 1
    over classes where some cosine is positive and is 0 elsewhere (zero prototypes give cosine 0).

    Args:
        embed: (B, D, H, W) pixel embeddings (normalised here).
        prototypes: (B, C, D) per-image or (C, D) shared prototypes (normalised here).
    """
    normed = normalize_features(embed, dim=1)
    if prototypes.dim() == 2:
        prototypes = prototypes.unsqueeze(0).expand(embed.shape[0], -1, -1)
    protos = normalize_features(prototypes.to(embed.dtype), dim=2)
    sim = torch.einsum('bcd,bdhw->bchw', protos, normed).clamp(min=0)
    return sim / sim.sum(1, keepdim=True).clamp(min=eps)


def _upsampled_sq_norm(feat: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``|up(F)(x)|^2`` of the bilinear up-sampling ``up(F) = A_y F A_x^T`` (per channel),
    (B, H, W), from the low-resolution Gram terms of neighbouring feature pixels (no up-sampled
    features).

    Each output pixel mixes at most a 2 x 2 block of input pixels, so ``|up(F)|^2 =
    A_y^2 S A_x^2T + 2 A_y^2 G_h A_x'^T + 2 A_y' G_v A_x^2T + 2 A_y' (G_d + G_a)
    A_x'^T`` with ``S`` the squared norms,
    ``G_h / G_v / G_d / G_a`` the dot products with the right, lower, lower-right neighbour and of
    the anti-diagonal pair, ``A^2`` the squared weights and
    ``A'[o, k] = A[o, k] A[o, k + 1]``.
    """
    def resample(grid, a_y, a_x):
        return torch.matmul(torch.matmul(a_y, grid), a_x.t())

    rows_sq, cols_sq = rows * rows, cols * cols
    rows_pair, cols_pair = rows[:, :-1] * rows[:, 1:], cols[:, :-1] * cols[:, 1:]
    out = resample((feat * feat).sum(1), rows_sq, cols_sq)
    if feat.shape[-1] > 1:
        out += 2 * resample((feat[..., :-1] * feat[..., 1:]).sum(1), rows_sq, cols_pair)
    if feat.shape[-2] > 1:
        out += 2 * resample((feat[..., :-1, :] * feat[..., 1:, :]).sum(1), rows_pair, cols_sq)
    if feat.shape[-1] > 1 and feat.shape[-2] > 1:
        diagonals = ((feat[..., :-1, :-1] * feat[..., 1:, 1:]).sum(1) +
                     (feat[..., :-1, 1:] * feat[..., 1:, :-1]).sum(1))
        out += 2 * resample(diagonals, rows_pair, cols_pair)
    return out


def upsampled_prototype_class_affinity(feats: Sequence[Tensor], prototypes: Tensor,
                                       size: Tuple[int, int], eps: float = 1e-10) -> Tensor:
    """:func:`prototype_class_affinity` of the embedding ``G = [up(F_1); up(F_2); ...]`` (bilinear,
    ``align_corners=False``, to ``size``), computed without building ``G``, (B, C, H, W).

    Bilinear up-sampling is linear, so ``<up(F), q> = up(<F, q>)`` (C maps instead of D channels are
    up-sampled) and ``|G|^2`` is assembled from neighbour dot products at feature resolution
    (:func:`_upsampled_sq_norm`). Same values as the explicit path up to float rounding, at a
    fraction of its time and memory (the explicit (B, D, H, W) embedding is the largest tensor
    of a PRSA step).

    Args:
        feats: feature maps (B, D_l, h_l, w_l).
        prototypes: (B, C, sum_l D_l) per-image prototypes (normalised here as one vector).
    """
    protos = normalize_features(prototypes.to(feats[0].dtype), dim=2)
    numerator, sq_norm, start = 0, 0, 0
    for feat in feats:
        dims = feat.shape[1]
        rows = interpolation_weights(feat.shape[-2], size[0], device=feat.device).to(feat.dtype)
        cols = interpolation_weights(feat.shape[-1], size[1], device=feat.device).to(feat.dtype)
        coarse = torch.einsum('bcd,bdhw->bchw', protos[:, :, start:start + dims], feat)
        numerator = numerator + torch.matmul(torch.matmul(rows, coarse), cols.t())
        sq_norm = sq_norm + _upsampled_sq_norm(feat, rows, cols)
        start += dims
    norm = sq_norm.clamp(min=0).sqrt().clamp(min=NORM_EPS).unsqueeze(1)
    sim = (numerator / norm).clamp(min=0)
    return sim / sim.sum(1, keepdim=True).clamp(min=eps)


def unfold_windows(x: Tensor, radius: int, dilation: int = 1) -> Tensor:
    """(B, C, H, W) -> (B, C, k2, H, W): the (2r+1)^2 neighbours of every pixel, zero padded.

    Window position ``t`` (row-major over offsets ``-r .. r``) of pixel ``(y, x)`` holds the value
    at
    ``(y + dy_t * dilation, x + dx_t * dilation)``.
    """
    batch, channels, height, width = x.shape
    size = 2 * radius + 1
    cols = F.unfold(x, kernel_size=size, dilation=dilation, padding=radius * dilation)
    return cols.view(batch, channels, size * size, height, width)


def local_affinity_kernel(image: Tensor,
                          radius: int = 5,
                          sigma_xy: float = 6.0,
                          sigma_rgb: float = 0.1,
                          weight: float = 1.0,
                          dilation: int = 1,
                          valid: Optional[Tensor] = None) -> Tensor:
    """Gated-CRF / bilateral kernel on local windows, (B, k2, H, W).

    ``K_ij = w * exp(-1/2 * (|p_i - p_j|^2 / sigma_xy^2 + sum_ch (I_i - I_j)^2 / sigma_rgb^2))`` for
    ``j`` in the ``(2r+1)^2`` window of ``i`` (``p`` = pixel coordinates, offsets scaled by
    ``dilation``), with ``K_ii = 0`` and ``K_ij = 0`` when ``j`` falls outside the image or either
    pixel is invalid (padding, rotation fill). Constant w.r.t. the network (no gradient needed).

    Args:
        image: (B, Cin, H, W) intensities in the units ``sigma_rgb`` refers to (ProCNS: [0, 1]).
        valid: optional (B, H, W) bool, False on padded / filled pixels.
    """
    image = image.detach().float()
    batch, _, height, width = image.shape
    size = 2 * radius + 1
    offsets = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype) * dilation
    dist_xy = (offsets[:, None] ** 2 + offsets[None, :] ** 2).reshape(-1) / sigma_xy ** 2
    with torch.no_grad():
        # in place on the one (B, Cin, k2, H, W) buffer: the kernel is the memory/time hot spot
        neigh = unfold_windows(image, radius, dilation)
        neigh.sub_(image[:, :, None]).pow_(2)
        kernel = neigh.sum(1)  # (B, k2, H, W) squared colour distances
        del neigh
        kernel.mul_(1.0 / sigma_rgb ** 2).add_(dist_xy.view(1, -1, 1, 1)).mul_(-0.5).exp_()
        if weight != 1.0:
            kernel.mul_(weight)
        ones = image.new_ones(batch, 1, height, width)
        if valid is not None:
            ones = ones * valid[:, None].to(ones.dtype)
        kernel.mul_(unfold_windows(ones, radius, dilation)[:, 0])  # source j inside and valid
        kernel.mul_(ones)  # destination i valid
        kernel[:, (size * size) // 2] = 0  # K_ii = 0
    return kernel


def local_prediction_agreement(probs: Tensor, kernel: Tensor, radius: int,
                               dilation: int = 1) -> Tensor:
    """``sum_j K_ij <P_i, P_j>`` for every pixel ``i``, (B, H, W).

    Args:
        probs: (B, C, H, W) class probabilities (summing to 1 over classes).
        kernel: (B, k2, H, W) from :func:`local_affinity_kernel` (same ``radius`` / ``dilation``).
    """
    kernel = kernel.to(probs.dtype)
    # probabilities sum to 1, so the last class needs no window of its own:
    # sum_j K_ij P_j,C-1 = sum_j K_ij - sum_{c < C-1} sum_j K_ij P_jc (halves the work for C = 2;
    # identical values and identical gradients w.r.t. the logits of a softmax)
    neigh = unfold_windows(probs[:, :-1], radius, dilation)  # (B, C-1, k2, H, W)
    # broadcast multiply + sum: about 2x faster on CPU than the equivalent einsum (no permutes)
    weighted = (neigh * kernel.unsqueeze(1)).sum(2)
    last = kernel.sum(1, keepdim=True) - weighted.sum(1, keepdim=True)
    return (torch.cat([weighted, last], dim=1) * probs).sum(1)


def potts_affinity_loss(probs: Tensor,
                        kernel: Tensor,
                        dest_mask: Tensor,
                        radius: int,
                        dilation: int = 1,
                        reference_compat_kernel_sum: bool = False) -> Tensor:
    """Gated-CRF (Potts) energy on destination pixels, normalised by ``C * |U|``.

    ``L = sum_{i in U} sum_j K_ij (1 - <P_i, P_j>) / (C |U|)`` (>= 0). Its gradient equals the
    reference PRSA / Gated-CRF loss; the reference adds the constant ``sum_{all i} sum_j K_ij``
    instead of ``sum_{i in U}`` (value offset, trap 7) and clamps at 1e-5 -- reproduced with
    ``reference_compat_kernel_sum=True``. An empty ``U`` gives 0 (the reference divides by 0).

    Args:
        probs: (B, C, H, W) probabilities.
        kernel: (B, k2, H, W).
        dest_mask: (B, H, W) bool destination pixels ``U``.
    """
    num_classes = probs.shape[1]
    dest = dest_mask.to(probs.dtype)
    count = dest.sum()
    if count.item() == 0:
        return probs.sum() * 0
    agreement = local_prediction_agreement(probs, kernel, radius, dilation)
    if reference_compat_kernel_sum:
        energy = kernel.sum().to(probs.dtype) - (agreement * dest).sum()
        energy = energy.clamp(min=1e-5)
    else:
        energy = ((kernel.sum(1).to(probs.dtype) - agreement) * dest).sum()
    return energy / (num_classes * count)



# ----------------------------------------------------------------------------------------------
# Fast path: the Potts energy without the (B, k2, H, W) kernel tensor
# ----------------------------------------------------------------------------------------------
# The kernel is symmetric (K_ij = K_ji), so each unordered pixel pair needs one exponential: the
# "half window" holds the offsets (dy, dx) with dy > 0, or dy = 0 and dx > 0, stored as a
# rectangle (dy = 1..r, dx = -r..r) and a half row (dy = 0, dx = 1..r). For any map x,
#   sum_j K_ij x_j = sum_{t in half} K_t(i) x(i + t) + sum_{t in half} K_t(i - t) x(i - t):
# the first sum reads shifted views of x, the second is the same product in the spatially
# flipped frame (see :func:`_window_sums`). The
# gradient of E = sum_{i in U} sum_j K_ij (1 - <P_i, P_j>) w.r.t. P is -(u Q + K (u P)) with
# Q = K P, so both aggregations are computed once in the forward pass and the backward pass is
# elementwise (no autograd graph through 121 window copies). Work is chunked over the batch (one
# image's half kernel at a time), as the reference's memory note suggests.


def _window_view(padded: Tensor, pad: int, size: Tuple[int, int], dilation: int, dy0: int,
                 rows: int, dx0: int, cols: int) -> Tensor:
    """Strided view ``v[c, a, b, y, x] = padded[c, pad + y + (dy0 + a) d, pad + x + (dx0 + b) d]``
    of a (C, H + 2 pad, W + 2 pad) tensor (no copy)."""
    height, width = size
    s_c, s_y, s_x = padded.stride()
    offset = padded.storage_offset() + (pad + dy0 * dilation) * s_y + (pad + dx0 * dilation) * s_x
    return padded.as_strided((padded.shape[0], rows, cols, height, width),
                             (s_c, dilation * s_y, dilation * s_x, s_y, s_x), offset)


def _half_window_kernel(image: Tensor, valid: Tensor, radius: int, sigma_xy: float,
                        sigma_rgb: float, weight: float, dilation: int) -> Tuple[Tensor, Tensor]:
    """Kernel of one image (Cin, H, W) on the half window: ``rect`` (r, 2r+1, H, W) for
    ``dy = 1..r, dx = -r..r`` and ``row`` (r, H, W) for ``dy = 0, dx = 1..r``; entries
    ``K(i, i + t)`` as in :func:`local_affinity_kernel` (0 outside the image or on invalid
    pixels)."""
    channels, height, width = image.shape
    pad = radius * dilation
    size = 2 * radius + 1
    # Pixels outside the image and invalid pixels get a "far" colour: every pair with one of them
    # has sum_ch (I_i - I_j)^2 / sigma_rgb^2 >= (20 + 1 / sigma_rgb)^2, so its exponential
    # underflows to exactly 0 and no validity masks are multiplied in; only pairs of two invalid
    # pixels (equal far colours) need the destination mask.
    far = float(image.abs().max()) + 20 * sigma_rgb + 1
    all_valid = bool(valid.all())
    if not all_valid:
        image = image.masked_fill(~valid[None], far)
    image_pad = F.pad(image, (pad, pad, pad, pad), value=far)
    offsets = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype) * dilation

    def part(dy0, rows, dx0, cols):
        view = _window_view(image_pad, pad, (height, width), dilation, dy0, rows, dx0, cols)
        sq = image.new_empty(rows, cols, height, width)
        torch.sub(view[0], image[0], out=sq).square_()
        diff = image.new_empty(rows, cols, height, width) if channels > 1 else None
        for ch in range(1, channels):  # colour channels, accumulated in place
            torch.sub(view[ch], image[ch], out=diff)
            sq.addcmul_(diff, diff)
        dist_xy = (offsets[radius + dy0:radius + dy0 + rows, None] ** 2 +
                   offsets[None, radius + dx0:radius + dx0 + cols] ** 2) / sigma_xy ** 2
        torch.add(-0.5 * dist_xy[:, :, None, None], sq, alpha=-0.5 / sigma_rgb ** 2,
                  out=sq).exp_()
        if weight != 1.0:
            sq.mul_(weight)
        if not all_valid:
            sq.mul_(valid.to(sq.dtype))  # destination valid (source: far colour)
        return sq

    rect = part(1, radius, -radius, size)
    row = part(0, 1, 1, radius)[0]
    return rect, row


def _tap_view(kernel_pad: Tensor, pad: int, size: Tuple[int, int], dilation: int, dy0: int,
              dx0: int) -> Tensor:
    """Strided view ``v[a, b, y, x] = k[a, b, pad + y + (dy0 + a) d, pad + x + (dx0 + b) d]`` of a
    padded per-tap map ``k`` (rows, cols, H + 2 pad, W + 2 pad): tap ``(a, b)`` read at
    ``i + t``."""
    height, width = size
    s_a, s_b, s_y, s_x = kernel_pad.stride()
    offset = (kernel_pad.storage_offset() + (pad + dy0 * dilation) * s_y +
              (pad + dx0 * dilation) * s_x)
    return kernel_pad.as_strided((kernel_pad.shape[0], kernel_pad.shape[1], height, width),
                                 (s_a + dilation * s_y, s_b + dilation * s_x, s_y, s_x), offset)


def _half_window_dot(x_pad: Tensor, rect: Tensor, row: Tensor, radius: int,
                     dilation: int) -> Tensor:
    """``sum_{t in half} k_t(i) x(i + t)``, (Cx, H, W), for a padded ``x`` and half-window maps
    ``rect`` (r, 2r+1, H, W) and ``row`` (r, H, W) (kernels or strided views of them)."""
    pad, size, hw = radius * dilation, 2 * radius + 1, tuple(row.shape[-2:])
    out = (_window_view(x_pad, pad, hw, dilation, 1, radius, -radius, size) * rect).sum((1, 2))
    out += (_window_view(x_pad, pad, hw, dilation, 0, 1, 1, radius)[:, 0] * row).sum(1)
    return out


def _window_sums(rect: Tensor, row: Tensor, x: Tensor, radius: int,
                 dilation: int) -> Tuple[Tensor, Tensor]:
    """``sum_j K_ij x_j`` (Cx, H, W) and the kernel's row sums ``sum_j K_ij`` (H, W) over the full
    window, from the half-window kernel.

    Forward half: ``K_t(i) x(i + t)``. Mirrored half: ``K_t(i - t) x(i - t)``, which in the
    spatially flipped frame (``~f(j) = f(-j)``) reads ``~K_t(j + t) ~x(j + t)`` -- the same kind of
    shifted-view product, so no scatter (``fold``) is needed.
    """
    pad = radius * dilation
    pads = (pad, pad, pad, pad)
    hw = tuple(row.shape[-2:])
    out = _half_window_dot(F.pad(x, pads), rect, row, radius, dilation)
    row_sums = rect.sum((0, 1)) + row.sum(0)
    rect_flip = _tap_view(F.pad(rect.flip(-2, -1), pads), pad, hw, dilation, 1, -radius)
    row_flip = _tap_view(F.pad(row.flip(-2, -1)[None], pads), pad, hw, dilation, 0, 1)[0]
    mirrored = _half_window_dot(F.pad(x.flip(-2, -1), pads), rect_flip, row_flip, radius,
                                dilation)
    out += mirrored.flip(-2, -1)
    row_sums += (rect_flip.sum((0, 1)) + row_flip.sum(0)).flip(-2, -1)
    return out, row_sums


class _LocalPottsEnergy(torch.autograd.Function):
    """``E = sum_{i in U} sum_j K_ij (1 - <P_i, P_j>)`` with an exact, elementwise backward.

    Probabilities sum to 1 over classes, so the last class needs no window of its own:
    ``K P_{C-1} = K 1 - sum_{c < C-1} K P_c`` and ``K (u P_{C-1}) = K u - sum_{c < C-1} K (u P_c)``
    (2C - 1 aggregated maps plus the kernel's row sums instead of 2C).
    """

    @staticmethod
    def forward(ctx, probs, image, dest, valid, radius, sigma_xy, sigma_rgb, weight, dilation):
        probs_d = probs.detach()
        keep = probs.shape[1] - 1
        u = dest.to(probs.dtype).unsqueeze(1)  # (B, 1, H, W)
        agreement = torch.empty_like(probs_d)  # Q = K P
        dest_spread = torch.empty_like(probs_d)  # R = K (u P)
        total = probs.new_zeros(())
        for b in range(probs.shape[0]):  # chunk over the batch: one half kernel in memory
            rect, row = _half_window_kernel(image[b], valid[b], radius, sigma_xy, sigma_rgb,
                                            weight, dilation)
            stacked = torch.cat([probs_d[b, :keep], probs_d[b, :keep] * u[b], u[b]], dim=0)
            both, row_sums = _window_sums(rect, row, stacked, radius, dilation)
            agreement[b, :keep] = both[:keep]
            agreement[b, keep] = row_sums - both[:keep].sum(0)
            dest_spread[b, :keep] = both[keep:2 * keep]
            dest_spread[b, keep] = both[2 * keep] - both[keep:2 * keep].sum(0)
            total += row_sums.sum()
        # sum_{i in U} sum_j K_ij = sum_j (K u)_j = sum over classes and pixels of K (u P)
        dest_kernel = dest_spread.sum()
        energy = dest_kernel - (probs_d * u * agreement).sum()
        ctx.save_for_backward(agreement, dest_spread, u)
        ctx.mark_non_differentiable(dest_kernel, total)
        return energy, dest_kernel, total

    @staticmethod
    def backward(ctx, grad_energy, _grad_dest, _grad_total):
        agreement, dest_spread, u = ctx.saved_tensors
        grad = -(u * agreement + dest_spread) * grad_energy
        return grad, None, None, None, None, None, None, None, None


def local_kernel_config(overrides: Optional[dict] = None) -> dict:
    """The local kernel's arguments (radius 5, sigma_xy 6, sigma_rgb 0.1, weight 1, dilation 1;
    ProCNS / WSL4MIS defaults) updated by a config's ``kernel`` dict; unknown keys are an error
    naming them (a typo would otherwise silently keep a default)."""
    config = dict(radius=5, sigma_xy=6.0, sigma_rgb=0.1, weight=1.0, dilation=1)
    unknown = sorted(set(overrides or {}) - set(config))
    if unknown:
        raise ValueError(f'unknown local kernel keys {unknown}; expected some of {sorted(config)}')
    config.update(overrides or {})
    return config


def local_potts_loss(probs: Tensor,
                     image: Tensor,
                     dest_mask: Tensor,
                     radius: int = 5,
                     sigma_xy: float = 6.0,
                     sigma_rgb: float = 0.1,
                     weight: float = 1.0,
                     dilation: int = 1,
                     valid: Optional[Tensor] = None,
                     reference_compat_kernel_sum: bool = False) -> Tensor:
    """:func:`potts_affinity_loss` with the kernel of :func:`local_affinity_kernel`, computed
    without materialising the kernel: same value and same gradient w.r.t. the logits of a softmax
    (w.r.t. ``probs`` it is the gradient of the full-window energy, which the explicit path's
    last-class shortcut changes by a per-pixel constant), up to float rounding; about 1.7x less
    time on CPU and a fraction of the memory (half the exponentials, no autograd buffers over the
    window).

    Args:
        probs: (B, C, H, W) probabilities (summing to 1 over classes).
        image: (B, Cin, H, W) intensities for the kernel (no gradient).
        dest_mask: (B, H, W) bool destination pixels ``U``.
        valid: optional (B, H, W) bool, False on padded / filled pixels.
    """
    num_classes = probs.shape[1]
    probs = probs.float()
    dest = dest_mask.bool()
    if valid is None:
        valid = torch.ones_like(dest)
    count = dest.sum()
    if count.item() == 0:
        return probs.sum() * 0
    energy, dest_kernel, total = _LocalPottsEnergy.apply(
        probs, image.detach().float(), dest, valid.bool(), radius, sigma_xy, sigma_rgb, weight,
        dilation)
    if reference_compat_kernel_sum:
        energy = (energy + (total - dest_kernel)).clamp(min=1e-5)
    return energy / (num_classes * count)
