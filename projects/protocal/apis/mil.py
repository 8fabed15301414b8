"""MIL counting helpers: model loading, pseudo masks (stage 3 input) and cell localisation.

* :func:`refine_mask` / :func:`clean_mask` / :func:`build_pseudo_mask` -- a pseudo mask is the
  union of the tiles whose classifier probability exceeds ``thr`` (all tiles dropped when the
  image's count is 0: the count gate), optionally intersected with a colour criterion chosen per
  stain (``hsv_value``: V <= 170, the reference's LYSTO/DAB rule; ``dab`` / ``hematoxylin``:
  colour-deconvolution density above Otsu), then objects smaller than ``min_size`` px are removed
  and holes smaller than ``hole_size`` px filled.
* :func:`localize_points` -- the reference's localisation: soft mask -> Gaussian blur (15, sigma 3)
  -> seed windows (16 px, stride 10) whose centre exceeds ``seed_thr`` -> mean shift per window ->
  DBSCAN (``eps`` 11 px, min_samples 1, computed exactly as connected components of the
  ``<= eps`` graph) -> clusters sorted by smoothed value, the top ``count`` kept.
* :func:`localize_tiled` -- the same on a large image cut into overlapping patches, each with its
  own count; a point is kept only by the patch that *owns* its location (the overlap is split in
  the middle), so cells in overlaps are never counted twice (the reference summed per-patch counts
  over 16-px overlaps, trap T9).

Images are H x W x 3 **RGB** uint8 unless said otherwise; points are ``(x, y)`` = (column, row).
"""
import os
import os.path as osp
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi

__all__ = [
    'init_mil_model', 'images_to_inputs', 'predict_counts', 'score_image_tiles',
    'seg_probabilities', 'refine_mask', 'clean_mask', 'build_pseudo_mask', 'build_pseudo_masks',
    'localize_points', 'localize_tiled', 'dbscan_min1', 'REFINE_METHODS'
]

REFINE_METHODS = (None, 'hsv_value', 'dab', 'hematoxylin')


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
def init_mil_model(config, checkpoint: Optional[str] = None, device: str = 'cpu',
                   cfg_options: Optional[dict] = None):
    """Build ``config.model`` in the mmseg scope, load ``checkpoint`` (non-strict) and set eval."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    import protocal  # noqa: F401
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=False, logger='current')
    model.cfg = cfg
    return model.to(device).eval()


def images_to_inputs(model, images_bgr: Sequence[np.ndarray]) -> torch.Tensor:
    """Normalised ``(B, 3, H, W)`` batch of BGR uint8 images through ``model.data_preprocessor``."""
    inputs = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images_bgr]
    return model.data_preprocessor(dict(inputs=inputs), False)['inputs']


@torch.no_grad()
def predict_counts(counter, images_bgr: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """Rounded counts of the stage-1 counter for BGR images (same size within a batch)."""
    out = []
    for i in range(0, len(images_bgr), batch_size):
        inputs = images_to_inputs(counter, images_bgr[i:i + batch_size])
        out.append(counter.predict_counts(inputs)['count'].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@torch.no_grad()
def score_image_tiles(tile_model, image_bgr: np.ndarray, tile_size: Optional[int] = None,
                      tile_stride: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Tile probabilities ``(T,)`` and grid ``(T, 2)`` of one BGR image (batched, fixed order)."""
    inputs = images_to_inputs(tile_model, [image_bgr])
    probs, grid = tile_model.score_tiles(inputs, tile_size, tile_stride)
    return probs[0].cpu().numpy(), grid


@torch.no_grad()
def seg_probabilities(seg_model, image_bgr: np.ndarray) -> np.ndarray:
    """Foreground probability ``(H, W)`` of an mmseg segmentor (softmax channel 1)."""
    from mmseg.structures import SegDataSample
    h, w = image_bgr.shape[:2]
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
    inputs = [torch.from_numpy(np.ascontiguousarray(image_bgr.transpose(2, 0, 1)))]
    data = seg_model.data_preprocessor(dict(inputs=inputs, data_samples=[sample]), False)
    res = seg_model.predict(data['inputs'], data['data_samples'])
    logits = res[0].seg_logits.data
    if logits.shape[0] == 1:
        return torch.sigmoid(logits[0]).cpu().numpy()
    return logits.softmax(0)[1].cpu().numpy()


# --------------------------------------------------------------------------------------------
# pseudo masks
# --------------------------------------------------------------------------------------------
def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) if values.size else 0.0
    return float(threshold_otsu(values))


def refine_mask(mask: np.ndarray, rgb: np.ndarray, refine: Optional[dict]) -> np.ndarray:
    """Intersect ``mask`` with a colour criterion chosen per stain.

    ``refine`` is ``None`` (no refinement) or a dict with ``type``:

    * ``'hsv_value'`` (``max_value=170``): keep pixels with ``V = max(R, G, B) <= max_value``,
      i.e. drop bright background (reference, LYSTO CD3/CD8 DAB);
    * ``'dab'`` (``thr=None``): keep pixels whose DAB optical density (``rgb2hed``) exceeds
      ``thr`` (``None``: Otsu over the image) -- brown IHC-positive cells;
    * ``'hematoxylin'`` (``thr=None``): the same on the haematoxylin density -- nuclei in H&E or
      in the counterstain of IHC.
    """
    mask = np.asarray(mask, bool)
    if refine is None:
        return mask
    refine = dict(refine)
    kind = refine.pop('type', None)
    if kind not in REFINE_METHODS:
        raise ValueError(f'refine type must be one of {REFINE_METHODS}, got {kind!r}')
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f'image {rgb.shape[:2]} and mask {mask.shape} differ in size')
    if kind is None:
        return mask
    if kind == 'hsv_value':
        value = rgb[..., :3].max(axis=2)
        return mask & (value <= float(refine.get('max_value', 170)))
    from skimage.color import rgb2hed
    channel = 2 if kind == 'dab' else 0
    dens = rgb2hed(rgb[..., :3])[..., channel]
    thr = refine.get('thr')
    if thr is None:
        thr = _otsu(dens.ravel())
    return mask & (dens > float(thr))


def clean_mask(mask: np.ndarray, min_size: int = 0, hole_size: int = 0) -> np.ndarray:
    """Remove 4-connected objects smaller than ``min_size`` px, then fill holes (4-connected
    background components) smaller than ``hole_size`` px (skimage's ``remove_small_objects`` /
    ``remove_small_holes`` semantics)."""
    mask = np.asarray(mask, bool).copy()
    if min_size > 0 and mask.any():
        lab, n = ndi.label(mask)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        small = sizes < int(min_size)
        small[0] = False
        mask[small[lab]] = False
    if hole_size > 0 and not mask.all():
        lab, n = ndi.label(~mask)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        small = sizes < int(hole_size)
        small[0] = False
        mask[small[lab]] = True
    return mask


def build_pseudo_mask(scores: np.ndarray, grid: np.ndarray, tile_size: int,
                      shape: Sequence[int], thr: float = 0.95, count: Optional[float] = None,
                      rgb: Optional[np.ndarray] = None, refine: Optional[dict] = None,
                      min_size: int = 400, hole_size: int = 120,
                      valid_hw: Optional[Sequence[int]] = None) -> np.ndarray:
    """Binary pseudo mask (uint8 0/1) of one image from its tile probabilities.

    ``count`` is the count gate (``0`` -> empty mask; ``None`` -> no gate). ``valid_hw`` zeroes
    the rows/columns outside the valid region (e.g. transparent slide borders).
    """
    from protocal.models.mil.tiling import tile_union_mask
    h, w = int(shape[0]), int(shape[1])
    if count is not None and int(round(float(count))) <= 0:
        return np.zeros((h, w), np.uint8)
    mask = tile_union_mask(scores, grid, (h, w), tile_size, thr)
    if refine is not None:
        if rgb is None:
            raise ValueError('refine needs the RGB image')
        mask = refine_mask(mask, rgb, refine)
    mask = clean_mask(mask, min_size, hole_size)
    if valid_hw is not None:
        mask[int(valid_hw[0]):] = False
        mask[:, int(valid_hw[1]):] = False
    return mask.astype(np.uint8)


def _load_bgr(info: dict) -> np.ndarray:
    from protocal.datasets.transforms.counting import LoadCountImage
    return LoadCountImage()(dict(info))['img']


def build_pseudo_masks(tile_model, dataset, out_dir: str, counter=None,
                       tile_size: Optional[int] = None,
                       stride: int = 5, thr: float = 0.95, count_gate: Optional[str] = 'pred',
                       refine: Optional[dict] = None, min_size: int = 400, hole_size: int = 120,
                       save_heatmaps: bool = True) -> Dict[str, Any]:
    """Write ``out_dir/img/<id>.png`` (RGB), ``out_dir/ann/<id>.png`` (0/1) for every image of a
    counting dataset (and ``out_dir/heatmap/<id>.png``, the tile probability map as 8-bit).

    Args:
        tile_model: trained :class:`~protocal.models.mil.MILTileClassifier`.
        dataset: a counting dataset (its ``data_list`` is read; the pipeline is not used).
        counter: stage-1 counter, needed for ``count_gate='pred'``.
        tile_size: pseudo-mask tile size (``None``: the classifier's training tile size, which
            avoids the reference's 32-vs-16 px scale mismatch, trap T6).
        count_gate: ``'pred'`` (stage-1 rounded count), ``'gt'`` (the training count label) or
            ``None``.

    Returns:
        summary dict (images, empty masks, mean foreground fraction, seconds per image).
    """
    if count_gate not in (None, 'pred', 'gt'):
        raise ValueError(f"count_gate must be None, 'pred' or 'gt', got {count_gate!r}")
    if count_gate == 'pred' and counter is None:
        raise ValueError("count_gate='pred' needs the stage-1 counter")
    t = int(tile_size or tile_model.tile_size)
    for sub in ('img', 'ann') + (('heatmap', ) if save_heatmaps else ()):
        os.makedirs(osp.join(out_dir, sub), exist_ok=True)
    from protocal.models.mil.tiling import tile_heatmap
    n, empty, fg, secs = 0, 0, [], 0.0
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        bgr = _load_bgr(info)
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        t0 = time.perf_counter()
        scores, grid = score_image_tiles(tile_model, bgr, t, stride)
        if count_gate == 'pred':
            count = float(predict_counts(counter, [bgr])[0])
        elif count_gate == 'gt':
            count = float(info['gt_count'])
        else:
            count = None
        mask = build_pseudo_mask(scores, grid, t, bgr.shape[:2], thr, count, rgb, refine,
                                 min_size, hole_size, info.get('valid_hw'))
        secs += time.perf_counter() - t0
        stem = str(info['img_id'])
        cv2.imwrite(osp.join(out_dir, 'img', f'{stem}.png'), bgr)
        cv2.imwrite(osp.join(out_dir, 'ann', f'{stem}.png'), mask)
        if save_heatmaps:
            heat = tile_heatmap(scores, grid, bgr.shape[:2], t)
            cv2.imwrite(osp.join(out_dir, 'heatmap', f'{stem}.png'),
                        cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET))
        n += 1
        empty += int(not mask.any())
        fg.append(float(mask.mean()))
    return dict(images=n, empty_masks=empty, mean_fg_fraction=float(np.mean(fg)) if fg else 0.0,
                seconds_per_image=secs / max(n, 1), tile_size=t, stride=stride, thr=thr,
                count_gate=count_gate, refine=refine, min_size=min_size, hole_size=hole_size)


# --------------------------------------------------------------------------------------------
# localisation
# --------------------------------------------------------------------------------------------
def dbscan_min1(points: np.ndarray, eps: float) -> np.ndarray:
    """DBSCAN labels with ``min_samples=1``: connected components of the ``d <= eps`` graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(pts).query_pairs(float(eps), output_type='ndarray')
    adj = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])) if len(pairs) else
                     (np.zeros(0), (np.zeros(0, int), np.zeros(0, int))),
                     shape=(len(pts), len(pts)))
    return connected_components(adj, directed=False)[1].astype(np.int64)


def localize_points(prob: np.ndarray, count: Optional[float] = None, smooth: str = 'gaussian',
                    ksize: int = 15, sigma: float = 3.0, seed_size: int = 16,
                    seed_stride: int = 10, seed_thr: float = 0.2, eps: float = 11.0
                    ) -> Dict[str, np.ndarray]:
    """Cell points from a soft mask (the reference's mean-shift + DBSCAN localisation).

    Args:
        prob: ``(H, W)`` foreground probability in ``[0, 1]``.
        count: keep the ``round(count)`` best clusters (``None``: all; ``0``: none).
        smooth: ``'gaussian'`` (``ksize``, ``sigma``) or ``'distance'`` (distance transform of
            ``prob > 10 / 255``, min-max normalised).
        seed_thr: seed windows whose centre value (smoothed, in ``[0, 1]``) exceeds it.
        eps: DBSCAN radius (px).

    Returns:
        dict ``points`` float32 ``(M, 2)`` (x, y), ``scores`` float32 ``(M,)`` (smoothed value at
        the point, descending) and ``num_candidates`` (clusters before the count gate).
    """
    from protocal.models.mil.tiling import tile_grid
    prob = np.asarray(prob, np.float32)
    if prob.ndim != 2:
        raise ValueError(f'prob must be (H, W), got {prob.shape}')
    if not np.isfinite(prob).all():
        raise ValueError('prob contains NaN or infinite values')
    h, w = prob.shape
    empty = dict(points=np.zeros((0, 2), np.float32), scores=np.zeros(0, np.float32),
                 num_candidates=0)
    if count is not None and int(round(float(count))) <= 0:
        return empty
    m = np.clip(prob, 0, 1) * 255.0
    if smooth == 'gaussian':
        sm = cv2.GaussianBlur(m.astype(np.float32), (int(ksize), int(ksize)), float(sigma))
    elif smooth == 'distance':
        dist = cv2.distanceTransform((m > 10).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        sm = (dist - dist.min()) / max(float(dist.max() - dist.min()), 1e-12) * 255.0
    else:
        raise ValueError(f"smooth must be 'gaussian' or 'distance', got {smooth!r}")
    sm = sm.astype(np.float32)
    s = min(int(seed_size), h, w)
    grid = tile_grid(h, w, s, seed_stride)
    cy = grid[:, 0] + s // 2
    cx = grid[:, 1] + s // 2
    seeds = grid[sm[np.minimum(cy, h - 1), np.minimum(cx, w - 1)] > seed_thr * 255.0]
    if len(seeds) == 0:
        return empty
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    conv = np.empty((len(seeds), 2), np.float64)
    for i, (y0, x0) in enumerate(seeds.tolist()):
        _, (x, y, ww, hh) = cv2.meanShift(sm, (int(x0), int(y0), s, s), crit)
        conv[i] = (x + (ww - 1) / 2.0, y + (hh - 1) / 2.0)
    labels = dbscan_min1(conv, eps)
    n = int(labels.max()) + 1
    sums = np.zeros((n, 2))
    np.add.at(sums, labels, conv)
    centres = np.rint(sums / np.bincount(labels, minlength=n)[:, None])
    centres[:, 0] = np.clip(centres[:, 0], 0, w - 1)
    centres[:, 1] = np.clip(centres[:, 1], 0, h - 1)
    scores = sm[centres[:, 1].astype(int), centres[:, 0].astype(int)] / 255.0
    order = np.lexsort((centres[:, 0], centres[:, 1], -scores))
    if count is not None:
        order = order[:int(round(float(count)))]
    return dict(points=centres[order].astype(np.float32), scores=scores[order].astype(np.float32),
                num_candidates=n)


def localize_tiled(prob: np.ndarray, windows: Sequence[Tuple[int, int, int, int]],
                   counts: Optional[Sequence[float]] = None, **kwargs) -> Dict[str, np.ndarray]:
    """Localise on a large image made of overlapping patches, without double counting.

    Args:
        prob: ``(H, W)`` stitched foreground probability.
        windows: patches as ``(y0, x0, height, width)``.
        counts: the count of each patch (``None``: no count gate).
        **kwargs: :func:`localize_points` options.

    Each patch is localised on its own with its own count; a point is kept only if it lies in
    the part of the image the patch owns: pixels are owned by the patch whose centre is nearest
    (Chebyshev-wise this splits every overlap in the middle), so each location belongs to exactly
    one patch and a cell in an overlap is reported once.
    """
    prob = np.asarray(prob, np.float32)
    wins = np.asarray(windows, np.int64).reshape(-1, 4)
    if counts is not None and len(counts) != len(wins):
        raise ValueError(f'{len(counts)} counts for {len(wins)} windows')
    centres = np.stack([wins[:, 0] + (wins[:, 2] - 1) / 2.0, wins[:, 1] + (wins[:, 3] - 1) / 2.0],
                       1)  # (y, x)
    pts, scs = [], []
    for i, (y0, x0, hh, ww) in enumerate(wins.tolist()):
        res = localize_points(prob[y0:y0 + hh, x0:x0 + ww],
                              None if counts is None else counts[i], **kwargs)
        if not len(res['points']):
            continue
        p = res['points'].astype(np.float64) + np.array([x0, y0])
        # owner of each point: the window (containing it) with the nearest centre
        yx = p[:, ::-1]
        inside = ((yx[:, None, 0] >= wins[None, :, 0]) & (yx[:, None, 0] < wins[None, :, 0] +
                                                          wins[None, :, 2]) &
                  (yx[:, None, 1] >= wins[None, :, 1]) & (yx[:, None, 1] < wins[None, :, 1] +
                                                          wins[None, :, 3]))
        d = np.abs(yx[:, None, :] - centres[None]).max(2)
        d[~inside] = np.inf
        owner = np.argmin(d, axis=1)
        keep = owner == i
        pts.append(p[keep])
        scs.append(res['scores'][keep])
    if not pts:
        return dict(points=np.zeros((0, 2), np.float32), scores=np.zeros(0, np.float32))
    return dict(points=np.concatenate(pts).astype(np.float32),
                scores=np.concatenate(scs).astype(np.float32))
