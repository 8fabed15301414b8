"""One-to-one matching of predicted and ground-truth points (numpy / scipy, no torch).

Shared by :class:`~protocal.evaluation.PointF1Metric` and the visualizer. Three matchings are
provided, all restricted to pairs closer than a radius:

* ``'bipartite'`` -- the reference code of the SEL/PCL papers: a **maximum-cardinality** matching
  of the graph whose edges join every prediction to every GT point within the radius
  (``scipy.sparse.csgraph.maximum_bipartite_matching``, Hopcroft-Karp). It maximises the number of
  matches and ignores distances; which maximum matching is returned is deterministic but
  arbitrary.
* ``'hungarian'`` -- a maximum-cardinality matching that, among all of them, has the smallest
  total distance (``scipy.optimize.linear_sum_assignment`` on each connected component of the
  graph, pairs beyond the radius forbidden). It therefore finds exactly as many matches as
  ``'bipartite'``; only the pairs differ.
* ``'greedy'`` -- the OCELOT 2023 challenge rule: predictions are visited by descending score
  (stable: ties keep the input order) and each takes the nearest still unmatched GT point within
  the radius (ties: lower GT index). It can find fewer matches than the two above.

Boundary: with ``strict=True`` a pair matches when ``d < radius`` (SEL/PCL reference code), with
``strict=False`` when ``d <= radius`` (OCELOT). ``strict=None`` picks the convention of the method's
origin: strict for ``'bipartite'``, not strict for ``'greedy'`` and ``'hungarian'``. Distances are
compared as squared distances in float64, so integer coordinates on the boundary are exact.

Candidate pairs come from a k-d tree, so the cost is about linear in the number of points for
cell-like densities; no dense ``M x N`` matrix is built except per connected component for
``'hungarian'``.
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, maximum_bipartite_matching
from scipy.spatial import cKDTree

__all__ = [
    'MATCH_METHODS', 'MatchCounts', 'as_points', 'candidate_pairs', 'match_points',
    'match_points_by_class', 'count_matches', 'match_counts', 'resolve_strict',
    'points_to_original'
]

#: supported values of ``method``
MATCH_METHODS = ('bipartite', 'hungarian', 'greedy')
_STRICT_DEFAULT = {'bipartite': True, 'hungarian': False, 'greedy': False}


class MatchCounts(NamedTuple):
    """True positives (matched predictions), false positives and false negatives."""
    tp: int
    fp: int
    fn: int


def as_points(points, name: str = 'points') -> np.ndarray:
    """``points`` as a float64 ``(N, 2)`` array; a clear error for bad shapes or non-finite values.

    Accepts numpy arrays, sequences and tensors (anything with ``.detach().cpu().numpy()``). An
    empty input of any shape with zero elements becomes ``(0, 2)``.
    """
    if hasattr(points, 'detach'):
        points = points.detach().cpu().numpy()
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f'{name} must have shape (N, 2) (x, y), got {arr.shape}')
    if not np.isfinite(arr).all():
        raise ValueError(f'{name} contains NaN or infinite coordinates')
    return arr


def resolve_strict(method: str, strict: Optional[bool]) -> bool:
    """The boundary convention used by ``method`` when ``strict`` is ``None``."""
    if method not in MATCH_METHODS:
        raise ValueError(f'unknown matching method {method!r}; expected one of {MATCH_METHODS}')
    return _STRICT_DEFAULT[method] if strict is None else bool(strict)


def _check_radius(radius: float) -> float:
    radius = float(radius)
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f'radius must be a positive finite number of pixels, got {radius}')
    return radius


def candidate_pairs(pred_xy: np.ndarray, gt_xy: np.ndarray, radius: float,
                    strict: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (prediction, GT) pairs within ``radius``.

    Returns:
        ``(pred_idx, gt_idx, dist2)``: int64, int64 and float64 arrays of equal length, sorted by
        prediction index then GT index; ``dist2`` is the squared Euclidean distance.
    """
    pred_xy, gt_xy = as_points(pred_xy, 'pred_xy'), as_points(gt_xy, 'gt_xy')
    radius = _check_radius(radius)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if len(pred_xy) == 0 or len(gt_xy) == 0:
        return empty
    # a slightly larger search radius, then the exact test on squared distances: the tree's
    # own rounding must not decide boundary cases
    slack = radius * (1 + 1e-9) + 1e-9
    pairs = cKDTree(pred_xy).sparse_distance_matrix(
        cKDTree(gt_xy), max_distance=slack, output_type='ndarray')
    if len(pairs) == 0:
        return empty
    pi = pairs['i'].astype(np.int64)
    gi = pairs['j'].astype(np.int64)
    diff = pred_xy[pi] - gt_xy[gi]
    dist2 = np.einsum('ij,ij->i', diff, diff)
    r2 = radius * radius
    keep = dist2 < r2 if strict else dist2 <= r2
    pi, gi, dist2 = pi[keep], gi[keep], dist2[keep]
    order = np.lexsort((gi, pi))
    return pi[order], gi[order], dist2[order]


def _match_bipartite(pi, gi, num_pred, num_gt):
    graph = csr_matrix((np.ones(len(pi), np.int8), (pi, gi)), shape=(num_pred, num_gt))
    graph.sort_indices()
    # rows = predictions, as in the reference: res[p] = matched GT column or -1
    res = maximum_bipartite_matching(graph, perm_type='column')
    pred_idx = np.flatnonzero(res >= 0)
    return pred_idx.astype(np.int64), res[pred_idx].astype(np.int64)


def _match_hungarian(pi, gi, dist2, num_pred, num_gt, radius):
    # connected components of the bipartite graph (nodes: predictions, then GT points)
    n = num_pred + num_gt
    adj = coo_matrix((np.ones(len(pi), np.int8), (pi, gi + num_pred)), shape=(n, n))
    num_comp, comp = connected_components(adj, directed=False)
    dist = np.sqrt(dist2)
    edge_comp = comp[pi]
    # an isolated pair (the usual case at cell densities) is matched as is
    single = np.bincount(edge_comp, minlength=num_comp)[edge_comp] == 1
    out_p, out_g = [pi[single]], [gi[single]]
    multi = np.flatnonzero(~single)
    order = multi[np.argsort(edge_comp[multi], kind='stable')]
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    for edges in (np.split(order, bounds) if len(order) else []):
        ep, eg, ed = pi[edges], gi[edges], dist[edges]
        rows, ep_local = np.unique(ep, return_inverse=True)
        cols, eg_local = np.unique(eg, return_inverse=True)
        # a forbidden pair costs more than any sum of allowed distances, so the assignment
        # first maximises the number of allowed pairs, then minimises their total distance
        big = radius * (min(len(rows), len(cols)) + 1) + 1.0
        cost = np.full((len(rows), len(cols)), big)
        cost[ep_local, eg_local] = ed
        r, c = linear_sum_assignment(cost)
        ok = cost[r, c] < big
        out_p.append(rows[r[ok]])
        out_g.append(cols[c[ok]])
    pred_idx = np.concatenate(out_p).astype(np.int64)
    gt_idx = np.concatenate(out_g).astype(np.int64)
    order = np.argsort(pred_idx, kind='stable')
    return pred_idx[order], gt_idx[order]


def _match_greedy(pi, gi, dist2, num_pred, num_gt, scores):
    if scores is None:
        visit = range(num_pred)
    else:
        if hasattr(scores, 'detach'):
            scores = scores.detach().cpu().numpy()
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != num_pred:
            raise ValueError(f'scores must have one value per prediction ({num_pred}), '
                             f'got {len(scores)}')
        if not np.isfinite(scores).all():
            raise ValueError('scores contain NaN or infinite values')
        visit = np.argsort(-scores, kind='stable').tolist()
    # candidates of each prediction by increasing distance, ties by GT index
    order = np.lexsort((gi, dist2, pi))
    cand = gi[order].tolist()
    starts = np.searchsorted(pi[order], np.arange(num_pred + 1)).tolist()
    taken = bytearray(num_gt)
    out_p, out_g = [], []
    for p in visit:
        for k in range(starts[p], starts[p + 1]):
            g = cand[k]
            if not taken[g]:
                taken[g] = 1
                out_p.append(p)
                out_g.append(g)
                break
    pred_idx = np.asarray(out_p, np.int64)
    gt_idx = np.asarray(out_g, np.int64)
    order = np.argsort(pred_idx, kind='stable')
    return pred_idx[order], gt_idx[order]


def match_points(pred_xy,
                 gt_xy,
                 radius: float,
                 method: str = 'bipartite',
                 scores=None,
                 strict: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Match predictions to GT points one-to-one within ``radius`` pixels.

    Args:
        pred_xy: ``(M, 2)`` predicted points (x, y).
        gt_xy: ``(N, 2)`` ground-truth points (x, y).
        radius: matching radius in pixels (> 0).
        method: ``'bipartite'``, ``'hungarian'`` or ``'greedy'`` (see the module docstring).
        scores: ``(M,)`` confidences, only used by ``'greedy'`` (``None``: input order).
        strict: ``True`` for ``d < radius``, ``False`` for ``d <= radius``, ``None`` for the
            method's default (see :func:`resolve_strict`).

    Returns:
        ``(pred_idx, gt_idx)``: int64 arrays of the matched pairs, sorted by prediction index.
        Every prediction and every GT point appears at most once.
    """
    strict = resolve_strict(method, strict)
    pred_xy, gt_xy = as_points(pred_xy, 'pred_xy'), as_points(gt_xy, 'gt_xy')
    radius = _check_radius(radius)
    pi, gi, dist2 = candidate_pairs(pred_xy, gt_xy, radius, strict)
    if method == 'greedy':
        return _match_greedy(pi, gi, dist2, len(pred_xy), len(gt_xy), scores)
    if len(pi) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if method == 'bipartite':
        return _match_bipartite(pi, gi, len(pred_xy), len(gt_xy))
    return _match_hungarian(pi, gi, dist2, len(pred_xy), len(gt_xy), radius)


def match_points_by_class(pred_xy,
                          pred_labels,
                          gt_xy,
                          gt_labels,
                          radius: float,
                          method: str = 'bipartite',
                          scores=None,
                          strict: Optional[bool] = None,
                          classes: Optional[Sequence[int]] = None
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """Class-aware matching: predictions only match GT points of the same label.

    Args:
        pred_labels, gt_labels: integer labels of the points.
        classes: labels to match (default: every label present in either input).
        Others: as in :func:`match_points`.

    Returns:
        ``(pred_idx, gt_idx)`` indices into the full inputs, sorted by prediction index.
    """
    pred_xy, gt_xy = as_points(pred_xy, 'pred_xy'), as_points(gt_xy, 'gt_xy')
    pred_labels = np.asarray(pred_labels, np.int64).reshape(-1)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    if len(pred_labels) != len(pred_xy) or len(gt_labels) != len(gt_xy):
        raise ValueError('labels must have one value per point: '
                         f'{len(pred_labels)} pred labels for {len(pred_xy)} points, '
                         f'{len(gt_labels)} GT labels for {len(gt_xy)} points')
    if scores is not None:
        if hasattr(scores, 'detach'):
            scores = scores.detach().cpu().numpy()
        scores = np.asarray(scores, np.float64).reshape(-1)
    if classes is None:
        classes = np.union1d(pred_labels, gt_labels)
    out_p, out_g = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in classes:
        p_sel = np.flatnonzero(pred_labels == c)
        g_sel = np.flatnonzero(gt_labels == c)
        if len(p_sel) == 0 or len(g_sel) == 0:
            continue
        p, g = match_points(pred_xy[p_sel], gt_xy[g_sel], radius, method,
                            None if scores is None else scores[p_sel], strict)
        out_p.append(p_sel[p])
        out_g.append(g_sel[g])
    pred_idx, gt_idx = np.concatenate(out_p), np.concatenate(out_g)
    order = np.argsort(pred_idx, kind='stable')
    return pred_idx[order], gt_idx[order]


def count_matches(num_pred: int, num_gt: int, pred_idx) -> MatchCounts:
    """TP / FP / FN from the matched pairs of ``num_pred`` predictions and ``num_gt`` GT points."""
    tp = int(len(pred_idx))
    if tp > min(num_pred, num_gt):
        raise ValueError(f'{tp} matches for {num_pred} predictions and {num_gt} GT points')
    return MatchCounts(tp=tp, fp=int(num_pred) - tp, fn=int(num_gt) - tp)


def match_counts(pred_xy,
                 gt_xy,
                 radius: float,
                 method: str = 'bipartite',
                 scores=None,
                 strict: Optional[bool] = None) -> MatchCounts:
    """:func:`match_points` reduced to TP / FP / FN counts."""
    pred_xy, gt_xy = as_points(pred_xy, 'pred_xy'), as_points(gt_xy, 'gt_xy')
    pred_idx, _ = match_points(pred_xy, gt_xy, radius, method, scores, strict)
    return count_matches(len(pred_xy), len(gt_xy), pred_idx)


def points_to_original(points, scale_factor) -> np.ndarray:
    """Map points of the network input back to the original image, like the predictions.

    GT points go through the test pipeline (``PointResize`` moves them with the image) while
    predictions are reported in the original image, so the metric and the visualizer map the GT
    back with the sample's ``scale_factor`` ``(w_scale, h_scale)``, using the same pixel-centre
    convention as the heads (:func:`protocal.structures.unscale_points`).
    """
    from protocal.structures import unscale_points  # lazy: structures imports torch
    points = as_points(points, 'points')
    if hasattr(scale_factor, 'detach'):
        scale_factor = scale_factor.detach().cpu().numpy()
    scale = np.asarray(scale_factor, np.float64).reshape(-1)
    if scale.size == 1:
        scale = np.repeat(scale, 2)
    if scale.shape != (2, ) or not np.isfinite(scale).all() or (scale <= 0).any():
        raise ValueError(f'invalid scale_factor {scale_factor!r}; expected (w_scale, h_scale) > 0')
    if len(points) == 0 or np.allclose(scale, 1.0):
        return points
    return np.asarray(unscale_points(points, tuple(scale.tolist())), np.float64)
