"""Seeded simulators of sparse segmentation labels: points, scribbles and blocks (spec 3.3).

Each function takes a full semantic label map (H, W) with classes ``0 .. C - 1`` (and optionally an
instance map, one id per object, 0 = background) plus a ``numpy.random.Generator`` and returns a
sparse map with the class on annotated pixels and ``ignore_index`` elsewhere. The generator of an
image comes from :func:`protocal.datasets.transforms.sparse_sampling.sparse_rng` (seed + file name),
so labels are identical in every epoch, worker, process and machine, as for sparse point detection.

Everything is whole-image array code (distance transforms, connected components, skeletons): no
Python loop over pixels; loops run over classes or connected components only.
"""
from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

__all__ = ['point_labels', 'scribble_labels', 'block_labels', 'disks_around']


def disks_around(seeds: np.ndarray, radius: float, region_ids: np.ndarray) -> np.ndarray:
    """Grow seed pixels into disks of ``radius`` that stay inside the seed's own region.

    Args:
        seeds: (H, W) bool seed pixels.
        radius: disk radius in pixels (0 = the seed pixels only).
        region_ids: (H, W) int region of every pixel (an instance id, or a class); a disk pixel must
            have the same region id as its nearest seed.

    Returns:
        (H, W) bool.
    """
    if radius <= 0 or not seeds.any():
        return seeds.copy()
    dist, (iy, ix) = ndi.distance_transform_edt(~seeds, return_indices=True)
    return (dist <= radius) & (region_ids == region_ids[iy, ix])


def _choose(rng: np.random.Generator, candidates: np.ndarray, count: int) -> np.ndarray:
    flat = np.flatnonzero(candidates)
    if flat.size == 0 or count <= 0:
        return flat[:0]
    return rng.choice(flat, size=min(count, flat.size), replace=False)


def point_labels(semantic: np.ndarray,
                 rng: np.random.Generator,
                 num_classes: int,
                 instances: Optional[np.ndarray] = None,
                 instance_fraction: float = 1.0,
                 points_per_class: Union[int, Sequence[int]] = 1,
                 bg_points: Union[int, str] = 'match',
                 margin: float = 2.0,
                 radius: float = 1.0,
                 jitter: float = 0.5,
                 ignore_index: int = 255) -> np.ndarray:
    """Point (click) labels.

    * With an instance map: one click on a random ``instance_fraction`` of the objects, at the
      object's most interior pixel (maximum distance to its boundary, ties and near-ties broken by
      ``jitter`` px of uniform noise) -- a stand-in for a human click on a nucleus.
    * Without: ``points_per_class`` random pixels inside every foreground class, at least
      ``margin`` px from its boundary (if possible).
    * Background: ``bg_points`` random background pixels at least ``margin`` px from foreground
      (``'match'``: as many as foreground clicks, at least 1).

    Each click becomes a disk of ``radius`` px clipped to its object / class region.
    """
    sem = semantic.astype(np.int64)
    out = np.full(sem.shape, ignore_index, dtype=np.uint8)
    seeds = np.zeros(sem.shape, dtype=bool)
    if instances is not None and instances.any():
        inst = instances.astype(np.int64)
        ids = np.unique(inst[inst > 0])
        keep = ids[rng.random(ids.size) < instance_fraction] if instance_fraction < 1 else ids
        if keep.size:
            # interior: distance to the object boundary (touching objects separated)
            edge = np.zeros(inst.shape, dtype=bool)
            edge[:-1] |= inst[:-1] != inst[1:]
            edge[1:] |= inst[:-1] != inst[1:]
            edge[:, :-1] |= inst[:, :-1] != inst[:, 1:]
            edge[:, 1:] |= inst[:, :-1] != inst[:, 1:]
            depth = ndi.distance_transform_edt((inst > 0) & ~edge)
            depth = depth + rng.random(inst.shape) * jitter
            depth[inst == 0] = -1
            pos = ndi.maximum_position(depth, inst, keep)
            rows, cols = np.asarray(pos, dtype=np.int64).reshape(-1, 2).T
            seeds[rows, cols] = True
        region = inst
        n_fg = int(keep.size)
    else:
        per_class = (list(points_per_class) if isinstance(points_per_class, (list, tuple))
                     else [points_per_class] * num_classes)
        n_fg = 0
        for cls in range(1, num_classes):
            mask = sem == cls
            if not mask.any():
                continue
            interior = ndi.distance_transform_edt(mask) > margin
            chosen = _choose(rng, interior if interior.any() else mask, int(per_class[cls]))
            seeds.flat[chosen] = True
            n_fg += int(chosen.size)
        region = sem + 1  # class regions (0 never used)
    # background clicks
    bg = sem == 0
    if bg.any():
        count = max(n_fg, 1) if bg_points == 'match' else int(bg_points)
        far = ndi.distance_transform_edt(bg) > margin
        chosen = _choose(rng, far if far.any() else bg, count)
        bg_seeds = np.zeros(sem.shape, dtype=bool)
        bg_seeds.flat[chosen] = True
        out[disks_around(bg_seeds, radius, bg.astype(np.int64))] = 0
        out[bg_seeds] = 0
    fg_disks = disks_around(seeds, radius, region) & (sem > 0)
    out[fg_disks] = sem[fg_disks]
    return out


def scribble_labels(semantic: np.ndarray,
                    rng: np.random.Generator,
                    num_classes: int,
                    erosion_range: Sequence[float] = (4, 10),
                    erode_min_area: int = 900,
                    min_component: int = 15,
                    jitter_min_area: int = 1000,
                    max_shift: int = 6,
                    max_angle: float = 15.0,
                    ignore_index: int = 255) -> np.ndarray:
    """Skeleton scribbles per class (after WSL4MIS ``scribbles_generator``, simplified).

    Per class region: erode ``ceil(a + U (b - a))`` times with a 3x3 element when the area exceeds
    ``erode_min_area`` (fewer if that would empty the region; computed at once with a chessboard
    distance transform); skeletonize; keep the largest skeleton component and every component over
    ``min_component`` px; dilate once (3x3); for regions over ``jitter_min_area`` px shift by
    U{-6..6} px and rotate by U(-15, 15) degrees about the region centre; intersect with the region
    (the un-jittered scribble is kept if nothing survives). The reference additionally walks one
    random path per skeleton component; here the whole pruned skeleton is kept (documented
    difference). Unlabelled pixels get ``ignore_index`` (the reference's generator wrote 255 while
    training ignored C, trap 17).
    """
    from skimage.morphology import skeletonize
    sem = semantic.astype(np.int64)
    out = np.full(sem.shape, ignore_index, dtype=np.uint8)
    eight = np.ones((3, 3), dtype=bool)
    for cls in range(num_classes):
        mask = sem == cls
        area = int(mask.sum())
        if area == 0:
            continue
        region = mask
        if area > erode_min_area:
            low, high = erosion_range
            steps = int(np.ceil(low + rng.random() * (high - low)))
            depth = ndi.distance_transform_cdt(mask, metric='chessboard')
            steps = min(steps, max(int(depth.max()) - 1, 0))
            region = depth > steps
        skel = skeletonize(region)
        if not skel.any():
            skel = region.copy()
        comp, n = ndi.label(skel, structure=eight)
        if n > 1:
            sizes = ndi.sum(skel, comp, np.arange(1, n + 1))
            keep = (sizes > min_component) | (np.arange(n) == int(np.argmax(sizes)))
            skel = keep[np.maximum(comp - 1, 0)] & (comp > 0)
        scribble = ndi.binary_dilation(skel, structure=eight)
        base = scribble & mask
        if area > jitter_min_area:
            dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
            angle = rng.uniform(-max_angle, max_angle)
            cy, cx = np.argwhere(mask).mean(0)
            moved = _rotate_shift(scribble, angle, (cy, cx), (dy, dx))
            jittered = moved & mask
            scribble = jittered if jittered.any() else base
        else:
            scribble = base
        out[scribble] = cls
    return out


def _rotate_shift(mask: np.ndarray, angle_deg: float, centre, shift) -> np.ndarray:
    """Nearest-neighbour rotation about ``centre`` then integer shift (one affine resampling)."""
    rad = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(rad), -np.sin(rad)], [np.sin(rad), np.cos(rad)]])
    centre = np.asarray(centre, dtype=np.float64)
    # output (r, c) samples input rot @ ((r, c) - centre - shift) + centre
    offset = centre - rot @ (centre + np.asarray(shift, dtype=np.float64))
    return ndi.affine_transform(mask.astype(np.uint8), rot, offset=offset, order=0,
                                mode='constant', cval=0).astype(bool)


def block_labels(semantic: np.ndarray,
                 rng: np.random.Generator,
                 num_classes: int,
                 blocks_per_class: int = 1,
                 block_ratio: float = 0.3,
                 min_size: int = 5,
                 max_size: Optional[int] = None,
                 ignore_index: int = 255) -> np.ndarray:
    """Square block labels inside every class region (incl. background).

    Side ``s = clip(round(block_ratio * sqrt(area)), min_size, max_size)``; the centre is a random
    pixel whose whole block fits inside the region (chessboard distance ``> s // 2``); if none
    exists the block shrinks to the largest that fits. Blocks are intersected with the region.
    """
    sem = semantic.astype(np.int64)
    out = np.full(sem.shape, ignore_index, dtype=np.uint8)
    height, width = sem.shape
    for cls in range(num_classes):
        mask = sem == cls
        area = int(mask.sum())
        if area == 0:
            continue
        side = int(round(block_ratio * np.sqrt(area)))
        side = max(side, min_size)
        if max_size is not None:
            side = min(side, max_size)
        depth = ndi.distance_transform_cdt(np.pad(mask, 1), metric='chessboard')[1:-1, 1:-1]
        half = side // 2
        fits = depth > half
        if not fits.any():
            half = max(int(depth.max()) - 1, 0)
            fits = depth > half
        for centre in _choose(rng, fits, blocks_per_class):
            row, col = divmod(int(centre), width)
            r0, r1 = max(row - half, 0), min(row + half + 1, height)
            c0, c1 = max(col - half, 0), min(col + half + 1, width)
            block = np.zeros_like(mask)
            block[r0:r1, c0:c1] = True
            out[block & mask] = cls
    return out
