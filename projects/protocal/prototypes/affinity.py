"""Affinities between node features, annotated evidence and prototypes.

This module is the single place in protocal that knows how "how similar is this node to the labelled
evidence" is computed. Every function is a pure tensor function; shapes use

* ``B`` images, ``D`` feature channels, ``N = h * w`` nodes (row-major flattening of a feature map),
* ``K`` foreground classes.

Cosine similarities use L2 normalisation with ``eps`` so that zero-norm features give a similarity
of 0 instead of NaN (trap T7 of the SEL/PCL spec).
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'flatten_nodes', 'node_indices', 'node_masks_from_points', 'normalize_features',
    'mean_affinity', 'prototype_cosine', 'masked_mean_features', 'labelled_to_unlabelled_distances',
    'mean_affinity_normed', 'prototype_cosine_normed'
]

NORM_EPS = 1e-6


def flatten_nodes(feats: Tensor) -> Tensor:
    """(B, D, h, w) -> (B, D, N) in row-major node order (node ``j = row * w + col``)."""
    return feats.flatten(2)


def node_indices(points: Tensor, stride: float, grid_hw: Tuple[int, int]) -> Tensor:
    """Row-major node index of each point.

    ``node = (y // stride) * w + (x // stride)`` with ``x`` the column and ``y`` the row. This is the
    orientation of :func:`flatten_nodes`; the reference PCL preprocessing wrote the node grid
    transposed (trap T3), which silently made the energies read the wrong nodes.

    Args:
        points: (P, 2) float tensor of ``(x, y)`` pixel coordinates.
        stride: pixels per node along each axis.
        grid_hw: ``(h, w)`` size of the node grid.

    Returns:
        (P,) int64 node indices, clamped to the grid (a point on the last pixel row of a padded
        image still falls into the last node).
    """
    h, w = grid_hw
    cols = torch.div(points[:, 0], stride, rounding_mode='floor').long().clamp_(0, w - 1)
    rows = torch.div(points[:, 1], stride, rounding_mode='floor').long().clamp_(0, h - 1)
    return rows * w + cols


def node_masks_from_points(points_list: Sequence[Tensor], labels_list: Sequence[Tensor],
                           num_classes: int, stride: float, grid_hw: Tuple[int, int],
                           device=None) -> Tensor:
    """Multi-hot node labels from annotated points.

    Returns a (B, K, N) bool tensor whose entry ``[b, c, j]`` is True when node ``j`` of image ``b``
    contains at least one annotated point of class ``c``. Several points (even of different classes)
    in one node are all kept, so no label is lost to "last one wins" (trap T23).
    """
    h, w = grid_hw
    batch = len(points_list)
    if device is None:
        device = points_list[0].device if batch else torch.device('cpu')
    masks = torch.zeros(batch, num_classes, h * w, dtype=torch.bool, device=device)
    for b, (points, labels) in enumerate(zip(points_list, labels_list)):
        if points.numel() == 0:
            continue
        nodes = node_indices(points.to(device), stride, grid_hw)
        masks[b, labels.to(device).long(), nodes] = True
    return masks


def normalize_features(feats: Tensor, dim: int = 1, eps: float = NORM_EPS) -> Tensor:
    """L2 normalisation along ``dim``; zero vectors stay zero (no NaN)."""
    return F.normalize(feats, p=2, dim=dim, eps=eps)


def mean_affinity(feats: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Mean [0, 1]-mapped cosine affinity of every node to a set of nodes.

    ``S_j = 1/|A| * sum_{l in A} (1 + cos(f_j, f_l)) / 2``. Because the cosine is bilinear in the
    normalised features, this equals ``(1 + f_hat_j . mean_{l in A} f_hat_l) / 2``: the cost is
    ``O(N * D)`` per set, with no ``N x |A|`` matrix, so thousands of annotated points are cheap.

    Args:
        feats: (B, D, N) node features (raw; normalised here).
        mask: (B, N) or (B, S, N) bool sets ``A`` (S sets per image, e.g. one per class).

    Returns:
        affinity: same leading shape as ``mask`` with values in [0, 1]; 0 where the set is empty.
        count: (B,) or (B, S) number of nodes in each set.
    """
    squeeze = mask.dim() == 2
    if squeeze:
        mask = mask.unsqueeze(1)
    affinity, count = mean_affinity_normed(normalize_features(feats, dim=1), mask)
    if squeeze:
        return affinity.squeeze(1), count.squeeze(1)
    return affinity, count


def mean_affinity_normed(normed: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """:func:`mean_affinity` of already normalised features (B, D, N) to (B, S, N) sets, so that
    callers needing several affinities and prototype similarities normalise only once."""
    weights = mask.to(normed.dtype)  # (B, S, N)
    count = weights.sum(-1)  # (B, S)
    mean_dir = torch.einsum('bsn,bdn->bsd', weights, normed) / count.clamp(min=1).unsqueeze(-1)
    affinity = (1 + torch.einsum('bsd,bdn->bsn', mean_dir, normed)) / 2
    affinity = affinity * (count > 0).unsqueeze(-1).to(affinity.dtype)
    return affinity, count


def prototype_cosine(feats: Tensor, prototypes: Tensor) -> Tensor:
    """Cosine similarity in [-1, 1] of every node to every prototype.

    Args:
        feats: (B, D, N) node features.
        prototypes: (K, D) prototype vectors.

    Returns:
        (B, K, N) cosine similarities.
    """
    return prototype_cosine_normed(normalize_features(feats, dim=1), prototypes)


def prototype_cosine_normed(normed: Tensor, prototypes: Tensor) -> Tensor:
    """:func:`prototype_cosine` of already normalised features (B, D, N)."""
    protos = normalize_features(prototypes.to(normed.dtype), dim=1)
    return torch.einsum('kd,bdn->bkn', protos, normed)


def masked_mean_features(feats: Tensor, masks: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-image mean of the raw features over each set of nodes.

    Args:
        feats: (B, D, N).
        masks: (B, K, N) bool.

    Returns:
        means: (B, K, D) mean feature (zeros where the set is empty).
        present: (B, K) bool, True where the set is non-empty.
    """
    weights = masks.to(feats.dtype)
    count = weights.sum(-1)
    means = torch.einsum('bkn,bdn->bkd', weights, feats) / count.clamp(min=1).unsqueeze(-1)
    return means, count > 0


def labelled_to_unlabelled_distances(feats: Tensor,
                                     labelled: Tensor,
                                     eps: float = 1e-12) -> Tuple[Tensor, Tensor]:
    """Euclidean distances between each image's labelled and unlabelled nodes, batched.

    Labelled nodes are gathered into a padded (B, A_max, D) tensor, so memory is
    ``O(B * A_max * N)`` (at most one row per labelled node, not per pixel).

    Args:
        feats: (B, D, N) raw node features.
        labelled: (B, N) bool.
        eps: floor of the squared distance before the square root, so identical features give a
            finite gradient instead of NaN.

    Returns:
        dist: (B, A_max, N) distances ``||f_j - f_l||`` for labelled ``j`` (rows) and all nodes ``l``.
        pair_mask: (B, A_max, N) bool, True for real (labelled row, unlabelled column) pairs.
    """
    batch, dims, num_nodes = feats.shape
    counts = labelled.sum(-1)
    a_max = int(counts.max().item()) if batch else 0
    if a_max == 0:
        empty = feats.new_zeros(batch, 0, num_nodes)
        return empty, empty.bool()
    # order each image's nodes so that labelled ones come first, then keep a_max rows
    order = torch.argsort(labelled.to(torch.int8), dim=-1, descending=True, stable=True)
    rows = order[:, :a_max]  # (B, A_max)
    row_valid = torch.arange(a_max, device=feats.device)[None] < counts[:, None]
    anchors = torch.gather(feats, 2, rows[:, None, :].expand(-1, dims, -1))  # (B, D, A_max)
    sq = (anchors.pow(2).sum(1)[:, :, None] + feats.pow(2).sum(1)[:, None, :] -
          2 * torch.einsum('bda,bdn->ban', anchors, feats))
    dist = sq.clamp(min=eps).sqrt()
    pair_mask = row_valid[:, :, None] & ~labelled[:, None, :]
    return dist, pair_mask
