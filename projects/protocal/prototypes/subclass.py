"""Several prototypes per class ("subclasses"): CAMs from prototype cosine, and parent merges.

Used by LPD (learnable prototype bank with ``K`` prototypes per class). The prototype bank is
ordered class-major: rows ``[c * K, (c + 1) * K)`` belong to class ``c``. ``num_per_class`` may
also be a sequence giving a different ``K_c`` per class.

All cosine similarities go through :func:`protocal.prototypes.prototype_cosine`, the single
implementation of prototype affinity in protocal.
"""
from typing import List, Sequence, Union

import torch
from torch import Tensor

from .affinity import flatten_nodes, prototype_cosine

__all__ = [
    'prototype_cam', 'class_slices', 'merge_subclasses', 'expand_parent_labels',
    'subclass_parent_index'
]

NumPerClass = Union[int, Sequence[int]]


def class_slices(num_per_class: NumPerClass, num_classes: int = None) -> List[slice]:
    """Row slices of each class in a class-major prototype bank."""
    if isinstance(num_per_class, int):
        if num_classes is None:
            raise ValueError('num_classes is needed when num_per_class is an int')
        counts = [num_per_class] * num_classes
    else:
        counts = [int(k) for k in num_per_class]
        if num_classes is not None and len(counts) != num_classes:
            raise ValueError(f'num_per_class has {len(counts)} entries for {num_classes} classes')
    if any(k < 1 for k in counts):
        raise ValueError(f'every class needs at least one prototype, got {counts}')
    slices, start = [], 0
    for k in counts:
        slices.append(slice(start, start + k))
        start += k
    return slices


def subclass_parent_index(num_per_class: NumPerClass, num_classes: int = None,
                          device=None) -> Tensor:
    """(M,) int64: the class of every prototype row."""
    slices = class_slices(num_per_class, num_classes)
    parent = torch.empty(slices[-1].stop, dtype=torch.long, device=device)
    for c, sl in enumerate(slices):
        parent[sl] = c
    return parent


def prototype_cam(feats: Tensor, prototypes: Tensor, scale: Union[Tensor, float] = 1.0) -> Tensor:
    """Scaled cosine map of every pixel to every prototype.

    ``A_k(p) = scale * cos(f(p), q_k)``.

    Args:
        feats: (B, D, H, W) pixel features.
        prototypes: (M, D) prototypes (normalised here).
        scale: scalar (tensor or float) logit scale.

    Returns:
        (B, M, H, W) activation maps.
    """
    batch, _, height, width = feats.shape
    cos = prototype_cosine(flatten_nodes(feats), prototypes)  # (B, M, N)
    return (cos * scale).reshape(batch, -1, height, width)


def merge_subclasses(scores: Tensor, num_per_class: NumPerClass, mode: str = 'mean') -> Tensor:
    """Merge per-prototype scores into per-class scores along dim 1.

    Args:
        scores: (B, M, ...) subclass logits or maps.
        num_per_class: ``K`` or a per-class sequence.
        mode: ``'mean'`` (LPD training): mean over the class's prototypes; ``'max'`` (LPD testing,
            the reference's name): the softmax-weighted sum ``sum_k softmax_k(s)_k * s_k``, a smooth
            maximum, applied element-wise (per pixel for maps).

    Returns:
        (B, C, ...) class scores.
    """
    if mode not in ('mean', 'max'):
        raise ValueError(f"merge mode must be 'mean' or 'max', got {mode!r}")
    num_classes = None if not isinstance(num_per_class, int) else scores.shape[1] // num_per_class
    slices = class_slices(num_per_class, num_classes)
    if slices[-1].stop != scores.shape[1]:
        raise ValueError(f'{scores.shape[1]} subclass scores do not match {slices[-1].stop} '
                         f'prototypes')
    if isinstance(num_per_class, int):  # fast path: equal K, one reshape
        grouped = scores.reshape(scores.shape[0], num_classes, num_per_class, *scores.shape[2:])
        if mode == 'mean':
            return grouped.mean(2)
        return (grouped.softmax(2) * grouped).sum(2)
    out = []
    for sl in slices:
        group = scores[:, sl]
        out.append(group.mean(1) if mode == 'mean' else (group.softmax(1) * group).sum(1))
    return torch.stack(out, 1)


def expand_parent_labels(labels: Tensor, num_per_class: NumPerClass) -> Tensor:
    """Repeat each class label over its prototypes: (B, C) -> (B, M)."""
    slices = class_slices(num_per_class, labels.shape[1])
    repeats = torch.tensor([sl.stop - sl.start for sl in slices], device=labels.device)
    return labels.repeat_interleave(repeats, dim=1)
