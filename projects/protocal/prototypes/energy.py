"""Semantic energies: how much loss an (unlabelled) node should receive.

A node that looks like annotated cells gets a low energy, so the "background" cross-entropy it would
otherwise receive (it is unlabelled, hence background in a sparse target) is shrunk. Labelled nodes
always have energy 1. Energies are per node, shape (B, C, N); they are upsampled to pixels by
:func:`energy_to_pixels`.

* :func:`agnostic_energy` is SEL's energy (one map, copied to every channel) and PCL's background
  channel ``E^0``.
* :func:`class_energies` is PCL's per-class energy mixing prototype similarity and local affinity.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .affinity import (mean_affinity, mean_affinity_normed, normalize_features,
                       prototype_cosine_normed)

__all__ = ['agnostic_energy', 'class_energies', 'energy_to_pixels', 'interpolation_weights']


def agnostic_energy(feats: Tensor, node_masks: Tensor) -> Tensor:
    """Class-agnostic semantic energy ``E_j = 1 - S_j`` (SEL; PCL's background channel).

    ``S_j`` is the mean [0, 1] affinity of node ``j`` to all labelled nodes of its image (any
    class). Labelled nodes get ``E = 1``; an image without labelled nodes gets ``E = 1``
    everywhere, i.e. the plain cross-entropy.

    Args:
        feats: (B, D, N) node features.
        node_masks: (B, K, N) bool multi-hot node labels.

    Returns:
        (B, N) energies in [0, 1].
    """
    labelled = node_masks.any(1)
    affinity, _ = mean_affinity(feats, labelled)
    energy = 1 - affinity
    return torch.where(labelled, torch.ones_like(energy), energy)


def class_energies(feats: Tensor,
                   node_masks: Tensor,
                   prototypes: Tensor,
                   alpha: float = 0.2,
                   prototype_similarity: str = 'cosine') -> Tensor:
    """PCL energies for the background and every foreground class, (B, K + 1, N).

    For class ``c``: ``M^c_j = alpha * g^c_j + (1 - alpha) * S^c_j`` where ``g^c_j`` is the
    similarity of node ``j`` to prototype ``p_c`` and ``S^c_j`` its mean affinity to the nodes
    labelled ``c`` in the same image; when the image has no ``c`` label, ``M^c_j = g^c_j``.
    ``E^c = 1 - M^c``. Channel 0 is :func:`agnostic_energy`. Every labelled node (any class) gets
    energy 1 in every channel.

    Args:
        feats: (B, D, N) node features.
        node_masks: (B, K, N) bool multi-hot node labels.
        prototypes: (K, D) class prototypes.
        alpha: weight of the global (prototype) term.
        prototype_similarity: ``'cosine'`` uses the raw cosine in [-1, 1], as the reference code
            does (so ``E^c`` lies in [0, 2]); ``'cosine01'`` maps it to [0, 1] like the local term.
    """
    if prototype_similarity not in ('cosine', 'cosine01'):
        raise ValueError(f"prototype_similarity must be 'cosine' or 'cosine01', "
                         f'got {prototype_similarity!r}')
    # one normalisation and one pair of einsums for the K + 1 sets (all labelled nodes, then
    # the nodes of each class): the same values as agnostic_energy + mean_affinity +
    # prototype_cosine, at a third of the cost
    normed = normalize_features(feats, dim=1)
    glob = prototype_cosine_normed(normed, prototypes)  # (B, K, N)
    if prototype_similarity == 'cosine01':
        glob = (1 + glob) / 2
    labelled = node_masks.any(1, keepdim=True)
    affinity, count = mean_affinity_normed(normed, torch.cat([labelled, node_masks], dim=1))
    local = affinity[:, 1:]  # (B, K, N)
    has_label = (count[:, 1:] > 0).unsqueeze(-1)
    mixed = torch.where(has_label, alpha * glob + (1 - alpha) * local, glob)
    fg_energy = 1 - mixed
    bg_energy = 1 - affinity[:, :1]  # agnostic_energy (labelled nodes are set to 1 below)
    energy = torch.cat([bg_energy, fg_energy], dim=1)
    return torch.where(labelled, torch.ones_like(energy), energy)


def energy_to_pixels(energy: Tensor, grid_hw: Tuple[int, int], out_hw: Tuple[int, int],
                     mode: str = 'bilinear', detach: bool = False,
                     channels: Optional[int] = None) -> Tensor:
    """Reshape node energies to a grid and upsample them to pixel resolution.

    Args:
        energy: (B, N) or (B, C, N).
        grid_hw: node grid ``(h, w)``.
        out_hw: pixel size ``(H, W)``.
        mode: ``'bilinear'`` (reference, align_corners=False) or ``'nearest'``.
        detach: stop the cross-entropy gradient from flowing into the features through the energy.
        channels: if given and ``energy`` is (B, N), the map is repeated to this many channels.

    Returns:
        (B, C, H, W) pixel energies.
    """
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


_WEIGHT_CACHE: dict = {}


def interpolation_weights(in_size: int, out_size: int, mode: str = 'bilinear',
                          device=None) -> Tensor:
    """The 1-D resampling matrix ``A`` (out_size, in_size) of :func:`energy_to_pixels`.

    Bilinear (``align_corners=False``) and nearest upsampling are separable, so
    ``energy_to_pixels(E) = A_h @ E @ A_w^T`` for a (h, w) grid ``E``. ``A`` is obtained by
    resampling the identity with ``F.interpolate`` itself, so its weights are exactly PyTorch's.
    Fused losses use it to upsample the energies a few rows at a time (never the whole
    (B, C, H, W) map) and to pull pixel sums back to nodes with ``A_h^T @ X @ A_w``. Results are
    cached per device.
    """
    if mode not in ('bilinear', 'nearest'):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    device = torch.device('cpu') if device is None else torch.device(device)
    key = (int(in_size), int(out_size), mode, str(device))
    weights = _WEIGHT_CACHE.get(key)
    if weights is None:
        eye = torch.eye(in_size, dtype=torch.float32).reshape(in_size, 1, in_size, 1)
        kwargs = dict(align_corners=False) if mode == 'bilinear' else {}
        cols = F.interpolate(eye, size=(out_size, 1), mode=mode, **kwargs)
        weights = cols.reshape(in_size, out_size).t().contiguous().to(device)
        if len(_WEIGHT_CACHE) > 64:
            _WEIGHT_CACHE.clear()
        _WEIGHT_CACHE[key] = weights
    return weights
