"""Square sliding-window tiles ("instances") of MIL counting and the adaptive top-k selection.

Pure numpy / torch helpers shared by the tile classifier, the top-k hook, the pseudo-mask builder
and the benchmark. Tiles are always enumerated in the same **row-major** order (top-left corners
sorted by row, then column), so a tile index means the same square everywhere: the reference
scored tiles through a shuffled loader and wrote the probabilities back by batch position (trap
T1), which made its top-k selection random.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    'tile_positions', 'tile_grid', 'extract_tiles', 'tile_heatmap', 'tile_union_mask',
    'topk_select', 'balance_selection'
]


def tile_positions(length: int, tile: int, stride: int) -> np.ndarray:
    """Start offsets ``0, s, 2s, ... <= length - tile`` plus a last one aligned to the border.

    This is the reference's ``get_tiles``: 299 px, tile 32, stride 20 -> 15 offsets.
    """
    length, tile, stride = int(length), int(tile), int(stride)
    if tile < 1 or stride < 1:
        raise ValueError(f'tile size and stride must be >= 1, got {tile}, {stride}')
    if tile > length:
        raise ValueError(f'tile size {tile} is larger than the image side {length}')
    pos = list(range(0, length - tile + 1, stride))
    if pos[-1] != length - tile:
        pos.append(length - tile)
    return np.asarray(pos, np.int64)


def tile_grid(height: int, width: int, tile: int, stride: int) -> np.ndarray:
    """``(T, 2)`` int64 top-left corners ``(y0, x0)`` of all tiles, row-major."""
    ys = tile_positions(height, tile, stride)
    xs = tile_positions(width, tile, stride)
    yy, xx = np.meshgrid(ys, xs, indexing='ij')
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def extract_tiles(images: torch.Tensor, grid: np.ndarray, tile: int,
                  index: Optional[np.ndarray] = None) -> torch.Tensor:
    """Crop tiles of a batch: ``(B, C, H, W)`` -> ``(B, T, C, tile, tile)`` (one gather, no loop).

    ``index`` selects a subset of the grid (same for every image).
    """
    if images.dim() != 4:
        raise ValueError(f'images must be (B, C, H, W), got {tuple(images.shape)}')
    g = np.asarray(grid if index is None else grid[np.asarray(index, np.int64)])
    windows = images.unfold(2, tile, 1).unfold(3, tile, 1)  # B, C, H-t+1, W-t+1, t, t (a view)
    ys = torch.as_tensor(g[:, 0], device=images.device)
    xs = torch.as_tensor(g[:, 1], device=images.device)
    return windows[:, :, ys, xs].permute(0, 2, 1, 3, 4)


def tile_heatmap(scores, grid: np.ndarray, shape: Sequence[int], tile: int,
                 reduce: str = 'max') -> np.ndarray:
    """Pixel heatmap of tile scores: each pixel gets the max (or mean) of the tiles covering it."""
    scores = np.asarray(scores.detach().cpu() if hasattr(scores, 'detach') else scores,
                        np.float32).reshape(-1)
    if len(scores) != len(grid):
        raise ValueError(f'{len(scores)} scores for {len(grid)} tiles')
    h, w = int(shape[0]), int(shape[1])
    if reduce == 'max':
        heat = np.zeros((h, w), np.float32)
        for (y, x), s in zip(grid.tolist(), scores.tolist()):
            view = heat[y:y + tile, x:x + tile]
            np.maximum(view, s, out=view)
        return heat
    if reduce == 'mean':
        total = np.zeros((h, w), np.float64)
        n = np.zeros((h, w), np.float64)
        for (y, x), s in zip(grid.tolist(), scores.tolist()):
            total[y:y + tile, x:x + tile] += s
            n[y:y + tile, x:x + tile] += 1
        return (total / np.maximum(n, 1)).astype(np.float32)
    raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")


def tile_union_mask(scores, grid: np.ndarray, shape: Sequence[int], tile: int,
                    thr: float) -> np.ndarray:
    """Union of the tiles with ``score > thr`` (bool ``H x W``)."""
    scores = np.asarray(scores.detach().cpu() if hasattr(scores, 'detach') else scores).reshape(-1)
    mask = np.zeros((int(shape[0]), int(shape[1])), bool)
    for y, x in grid[scores > thr].tolist():
        mask[y:y + tile, x:x + tile] = True
    return mask


def topk_select(scores, count: int, k_per_pos: float = 1.0, k_neg: int = 30
                ) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Adaptive top-k instances of one image.

    ``count > 0``: the ``k = round(count * k_per_pos)`` highest-scoring tiles, label 1.
    ``count == 0``: the ``k_neg`` highest-scoring tiles (hard negatives), label 0.
    Ties are broken by tile index (stable), so the result is deterministic. When ``k`` exceeds
    the number of tiles ``T`` it is clamped to ``T`` (the reference's negative slice, trap T10)
    and the third return value is ``True`` so the caller can count and report it.

    Returns:
        ``(tile_idx int64 (k,), labels int64 (k,), clamped)``.
    """
    s = np.asarray(scores.detach().cpu() if hasattr(scores, 'detach') else scores,
                   np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise ValueError('tile scores contain NaN or infinite values')
    count = int(count)
    if count < 0:
        raise ValueError(f'count must be >= 0, got {count}')
    t = len(s)
    if count > 0:
        k, label = int(round(count * float(k_per_pos))), 1
    else:
        k, label = int(k_neg), 0
    clamped = k > t
    k = min(max(k, 0), t)
    order = np.argsort(-s, kind='stable')[:k]
    return order.astype(np.int64), np.full(k, label, np.int64), bool(clamped and label == 1)


def balance_selection(labels: np.ndarray, pos_neg_ratio: float = 0.5,
                      rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Keep mask that brings ``#pos / #neg`` to ``pos_neg_ratio`` by random dropping.

    As the reference: if ``pos > floor(ratio * neg)`` excess positives are dropped, elif
    ``neg > floor(pos / ratio)`` excess negatives are dropped. When one side is empty nothing can
    be balanced; everything is kept (the caller warns: stage 2 needs zero-count images).
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(0) if rng is None else rng
    keep = np.ones(len(labels), bool)
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    if len(pos) == 0 or len(neg) == 0 or pos_neg_ratio is None or pos_neg_ratio <= 0:
        return keep
    max_pos = int(np.floor(pos_neg_ratio * len(neg)))
    max_neg = int(np.floor(len(pos) / pos_neg_ratio))
    if len(pos) > max_pos:
        keep[rng.permutation(pos)[max_pos:]] = False
    elif len(neg) > max_neg:
        keep[rng.permutation(neg)[max_neg:]] = False
    return keep
