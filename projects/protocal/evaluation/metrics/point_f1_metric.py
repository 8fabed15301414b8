"""Precision / recall / F1 of point (cell) detections, per class and class-agnostic."""
import re
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log

from protocal.utils import to_numpy
from ..functional import as_points, match_points, points_to_original, resolve_strict

__all__ = ['PointF1Metric']

# columns of the per-image count table
_N_PRED, _N_GT, _TP, _N_UNANN, _TP_UNANN = range(5)
_NUM_COLS = 5

_MODES = {
    # mode: (matching method, aggregation)
    'reference': ('bipartite', 'image'),
    'ocelot': ('greedy', 'dataset'),
    'hungarian': ('hungarian', 'dataset'),
}


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """``obj[key]`` for dicts (``DetDataSample.to_dict()``), else the attribute or metainfo."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    value = getattr(obj, key, None)
    if value is None and hasattr(obj, 'metainfo'):
        value = obj.metainfo.get(key, None)
    return default if value is None else value


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2.0 * precision * recall / total if total > 0 else 0.0


def _key(name: str) -> str:
    key = re.sub(r'\W+', '_', str(name)).strip('_')
    return key or 'class'


@METRICS.register_module()
class PointF1Metric(BaseMetric):
    """Point-detection precision, recall and F1 for cell detection.

    A prediction is a true positive when it is matched one-to-one to a ground-truth point **of
    the same class** within ``radius`` pixels (see :mod:`protocal.evaluation.functional`). All GT
    points count (annotated or not, see ``docs/architecture.md``).

    Modes (``mode``):

    * ``'reference'`` (SEL/PCL papers' ``test.py``): maximum bipartite matching with ``d < r``;
      per image ``P_i = TP / #pred`` and ``R_i = TP / #GT``; ``P`` and ``R`` are the means over
      images and ``F1 = 2 P R / (P + R)`` (F1 of the mean P and mean R, not the mean of per-image
      F1s). Differences from the reference code: GT is the raw points (not peaks re-extracted from
      a heatmap), the off-by-one of the TP count is fixed (``bug_compat=True`` restores it), and
      empty images follow the conventions below instead of crashing / ``1e-10`` denominators.
    * ``'ocelot'`` (OCELOT 2023 official metric): per class, predictions by descending score each
      take the nearest unmatched GT within ``d <= r``; TP, FP and FN are summed over the dataset
      and P, R, F1 come from the sums (no ``1e-7`` terms: zero denominators give 0). Ties in score
      keep the prediction order (the official code's ``argsort`` is not stable).
      ``bug_compat=True`` reproduces the official quirk of sorting by the class id instead of the
      score, i.e. predictions are visited in their input order.
    * ``'hungarian'``: maximum-cardinality matching with the smallest total distance, ``d <= r``,
      dataset-level sums. Its counts equal those of the maximum bipartite matching; it differs from
      ``'reference'`` by the aggregation and from ``'ocelot'`` by the matching.

    ``mF1`` is the mean of the per-class F1 values (every class in ``classes`` counts, a class with
    neither GT nor predictions has F1 0). With ``class_agnostic=True`` the same matching is also
    run ignoring labels and reported as ``det_precision``, ``det_recall`` and ``det_f1``.

    Unannotated recall: when the GT carries ``annotated`` flags (sparse training subset),
    ``{class}_unannotated_recall`` is the fraction of the **unannotated** GT points of that class
    that are matched, ``unannotated_recall`` the same over all classes and
    ``det_unannotated_recall`` its class-agnostic version. It measures how many of the cells
    that training never saw labelled the model recovers. It is always computed from counts summed
    over the dataset, whatever ``mode`` (a recovery rate of cells; per-image averaging would weigh
    an image with one unannotated cell like one with hundreds). It is 0.0 when there is no
    unannotated GT point.

    Conventions (never NaN):

    * per-image averaging: an image with neither GT nor predictions of a class is left out of that
      class's averages; with predictions but no GT its precision is 0 and it is left out of the
      recall average (recall is undefined); with GT but no predictions its precision and recall
      are 0 (as the reference's ``1e-10`` denominators give);
    * summed counts: a zero denominator gives 0.0;
    * an average over no image at all is 0.0.

    ``min_gt_per_image`` (the PCL reference uses 10): for each class, images with fewer GT points
    of that class are left out of that class's scores in every mode (and of the class-agnostic
    scores when they have fewer GT points in total). The default 0 keeps every image.

    Coordinates: predictions are in the original image (``rescale=True``). GT points went through
    the test pipeline, so when the sample has a ``scale_factor`` they are mapped back to the
    original image as well (``rescale_gt=True``); the radius is in original-image pixels.

    Args:
        mode: ``'reference'``, ``'ocelot'`` or ``'hungarian'``.
        radius: matching radius in pixels. Ignored when ``radius_um`` is given.
        radius_um: matching radius in microns; each image's radius is ``radius_um / mpp`` with the
            image's ``mpp`` metainfo, else the metric's ``mpp``.
        mpp: microns per pixel used when an image has no ``mpp`` of its own.
        min_gt_per_image: see above.
        strict: ``True``: ``d < r``; ``False``: ``d <= r``; ``None``: the mode's convention
            (strict for ``'reference'`` only).
        aggregation: ``'image'`` (mean of per-image P and R) or ``'dataset'`` (summed counts);
            ``None``: the mode's (``'image'`` for ``'reference'``, else ``'dataset'``).
        classes: class names (default: ``dataset_meta['classes']``).
        class_agnostic: also report class-agnostic detection scores (``det_*``).
        bug_compat: reproduce the reference's metric bugs where cheap: in ``'reference'`` mode the
            TP count drops a prediction matched to GT index 0 of its class (T13, ``res > 0``); in
            ``'ocelot'`` mode predictions are visited in input order. No effect in
            ``'hungarian'`` mode. The reference's GT re-extraction from heatmap peaks (T14) is
            not reproduced.
        rescale_gt: map GT points back to the original image with the sample's ``scale_factor``.
        collect_device: ``'cpu'`` or ``'gpu'``, for distributed collection.
        prefix: prefix of the metric names (default ``'point'``).
    """

    default_prefix: Optional[str] = 'point'

    def __init__(self,
                 mode: str = 'reference',
                 radius: float = 15.0,
                 radius_um: Optional[float] = None,
                 mpp: Optional[float] = None,
                 min_gt_per_image: int = 0,
                 strict: Optional[bool] = None,
                 aggregation: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None,
                 class_agnostic: bool = True,
                 bug_compat: bool = False,
                 rescale_gt: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if mode not in _MODES:
            raise ValueError(f'PointF1Metric: mode must be one of {tuple(_MODES)}, got {mode!r}')
        self.mode = mode
        self.method, default_agg = _MODES[mode]
        if aggregation not in (None, 'image', 'dataset'):
            raise ValueError("PointF1Metric: aggregation must be None, 'image' or 'dataset', "
                             f'got {aggregation!r}')
        self.aggregation = aggregation or default_agg
        self.strict = resolve_strict(self.method, strict)
        if radius_um is None:
            if radius is None or not np.isfinite(radius) or radius <= 0:
                raise ValueError(f'PointF1Metric: radius must be a positive number of pixels, '
                                 f'got {radius}')
        elif not np.isfinite(radius_um) or radius_um <= 0:
            raise ValueError(f'PointF1Metric: radius_um must be positive, got {radius_um}')
        if mpp is not None and (not np.isfinite(mpp) or mpp <= 0):
            raise ValueError(f'PointF1Metric: mpp must be positive, got {mpp}')
        if int(min_gt_per_image) != min_gt_per_image or min_gt_per_image < 0:
            raise ValueError('PointF1Metric: min_gt_per_image must be a non-negative integer, '
                             f'got {min_gt_per_image}')
        self.radius = None if radius is None else float(radius)
        self.radius_um = None if radius_um is None else float(radius_um)
        self.mpp = None if mpp is None else float(mpp)
        self.min_gt_per_image = int(min_gt_per_image)
        self._classes = None if classes is None else tuple(classes)
        self.class_agnostic = bool(class_agnostic)
        self.bug_compat = bool(bug_compat)
        self.rescale_gt = bool(rescale_gt)

    # ------------------------------------------------------------------------------ helpers
    @property
    def classes(self) -> Tuple[str, ...]:
        """Class names, from the ``classes`` argument or the dataset's metainfo."""
        if self._classes is not None:
            return self._classes
        meta = self.dataset_meta or {}
        if meta.get('classes'):
            return tuple(meta['classes'])
        raise ValueError('PointF1Metric needs the class names: pass classes=[...] or evaluate '
                         "a dataset whose metainfo has 'classes'")

    def _radius(self, sample: Any, where: str) -> float:
        if self.radius_um is None:
            return self.radius
        mpp = _get(sample, 'mpp', None)
        if mpp is None:
            mpp = self.mpp
        if mpp is None:
            raise ValueError(f'PointF1Metric(radius_um={self.radius_um}): {where} has no "mpp" '
                             '(microns per pixel) in its metainfo and the metric has no mpp=... '
                             'fallback')
        mpp = float(mpp)
        if not np.isfinite(mpp) or mpp <= 0:
            raise ValueError(f'PointF1Metric: {where} has an invalid mpp {mpp}')
        return self.radius_um / mpp

    def _labels(self, instances: Any, n: int, field: str, num_classes: int) -> np.ndarray:
        labels = to_numpy(_get(instances, 'labels', None))
        if labels is None:
            if n:
                raise ValueError(f'{field}.labels is missing')
            return np.zeros(0, np.int64)
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n:
            raise ValueError(f'{field}.labels has {len(labels)} values for {n} points')
        if n and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f'{field}.labels must be in [0, {num_classes - 1}] '
                             f'({num_classes} classes), got values in '
                             f'[{labels.min()}, {labels.max()}]')
        return labels.astype(np.int64)

    def _count(self, pred_xy, scores, gt_xy, unannotated, radius) -> np.ndarray:
        """One row of the count table for a single (image, class) pair."""
        row = np.zeros(_NUM_COLS, np.int64)
        row[_N_PRED], row[_N_GT] = len(pred_xy), len(gt_xy)
        row[_N_UNANN] = int(unannotated.sum())
        if len(pred_xy) == 0 or len(gt_xy) == 0:
            return row
        if self.bug_compat and self.method == 'greedy':
            scores = None
        pred_idx, gt_idx = match_points(pred_xy, gt_xy, radius, self.method, scores, self.strict)
        if self.bug_compat and self.method == 'bipartite':
            keep = gt_idx > 0  # the reference counts np.where(res > 0)
            pred_idx, gt_idx = pred_idx[keep], gt_idx[keep]
        row[_TP] = len(pred_idx)
        row[_TP_UNANN] = int(unannotated[gt_idx].sum())
        return row

    # ------------------------------------------------------------------------------ process
    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Store a compact ``(K + 1, 5)`` count table per image (last row: class-agnostic)."""
        for sample in data_samples:
            self.results.append(self._process_one(sample))

    def _process_one(self, sample: Any) -> Dict[str, Any]:
        where = _get(sample, 'img_path', None) or f"image {_get(sample, 'img_id', '?')}"
        num_classes = len(self.classes)
        pred = _get(sample, 'pred_instances', None)
        gt = _get(sample, 'gt_instances', None)
        if pred is None:
            raise ValueError(f'PointF1Metric: {where} has no pred_instances')
        if gt is None:
            raise ValueError(f'PointF1Metric: {where} has no gt_instances; the test pipeline '
                             'must keep the GT points for evaluation')
        pred_xy = as_points(to_numpy(_get(pred, 'points', np.zeros((0, 2)))),
                            f'{where}: pred_instances.points')
        pred_labels = self._labels(pred, len(pred_xy), f'{where}: pred_instances', num_classes)
        scores = to_numpy(_get(pred, 'scores', None))
        if scores is not None:
            scores = np.asarray(scores, np.float64).reshape(-1)
            if len(scores) != len(pred_xy):
                raise ValueError(f'{where}: pred_instances.scores has {len(scores)} values for '
                                 f'{len(pred_xy)} points')
        gt_xy = as_points(to_numpy(_get(gt, 'points', np.zeros((0, 2)))),
                          f'{where}: gt_instances.points')
        gt_labels = self._labels(gt, len(gt_xy), f'{where}: gt_instances', num_classes)
        annotated = to_numpy(_get(gt, 'annotated', None))
        has_annotated = annotated is not None
        if has_annotated:
            annotated = np.asarray(annotated, bool).reshape(-1)
            if len(annotated) != len(gt_xy):
                raise ValueError(f'{where}: gt_instances.annotated has {len(annotated)} values '
                                 f'for {len(gt_xy)} points')
        else:
            annotated = np.ones(len(gt_xy), bool)
        unannotated = ~annotated
        scale = _get(sample, 'scale_factor', None)
        if self.rescale_gt and scale is not None and len(gt_xy):
            gt_xy = points_to_original(gt_xy, scale)
        radius = self._radius(sample, where)

        counts = np.zeros((num_classes + 1, _NUM_COLS), np.int64)
        for c in range(num_classes):
            p_sel, g_sel = pred_labels == c, gt_labels == c
            counts[c] = self._count(pred_xy[p_sel], None if scores is None else scores[p_sel],
                                    gt_xy[g_sel], unannotated[g_sel], radius)
        if self.class_agnostic:
            counts[num_classes] = self._count(pred_xy, scores, gt_xy, unannotated, radius)
        return dict(counts=counts, has_annotated=has_annotated)

    # ------------------------------------------------------------------------------ compute
    def _scores(self, counts: np.ndarray) -> Dict[str, float]:
        """P / R / F1 / unannotated recall of one class from its ``(I, 5)`` count table."""
        keep = counts[:, _N_GT] >= self.min_gt_per_image
        c = counts[keep]
        n_pred, n_gt, tp = c[:, _N_PRED], c[:, _N_GT], c[:, _TP]
        out = dict(images=int(keep.sum()), gt=int(n_gt.sum()), pred=int(n_pred.sum()),
                   tp=int(tp.sum()), unann_gt=int(c[:, _N_UNANN].sum()))
        if self.aggregation == 'image':
            p_set = (n_pred + n_gt) > 0
            r_set = n_gt > 0
            p_img = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)[p_set]
            r_img = (tp / np.maximum(n_gt, 1))[r_set]
            precision = float(p_img.mean()) if len(p_img) else 0.0
            recall = float(r_img.mean()) if len(r_img) else 0.0
        else:
            precision = _safe_div(out['tp'], out['pred'])
            recall = _safe_div(out['tp'], out['gt'])
        out.update(precision=precision, recall=recall, f1=_f1(precision, recall),
                   unannotated_recall=_safe_div(c[:, _TP_UNANN].sum(), out['unann_gt']),
                   unann_tp=int(c[:, _TP_UNANN].sum()))
        return out

    def compute_metrics(self, results: List[Dict[str, Any]]) -> Dict[str, float]:
        """Per-class ``{name}_precision/_recall/_f1`` (+ ``_unannotated_recall``), ``mF1`` and
        the class-agnostic ``det_*`` scores."""
        logger = MMLogger.get_current_instance()
        classes = self.classes
        num_classes = len(classes)
        keys = [_key(name) for name in classes]
        if len(set(keys)) != len(keys):
            raise ValueError(f'PointF1Metric: class names {classes} do not give unique metric '
                             f'keys ({keys})')
        with_unann = any(r['has_annotated'] for r in results)
        if results:
            counts = np.stack([r['counts'] for r in results])
        else:
            counts = np.zeros((0, num_classes + 1, _NUM_COLS), np.int64)
        if counts.shape[1] != num_classes + 1:
            raise ValueError(f'PointF1Metric: results were processed with '
                             f'{counts.shape[1] - 1} classes but {num_classes} are configured')

        metrics: Dict[str, float] = OrderedDict()
        per_class = [self._scores(counts[:, c]) for c in range(num_classes)]
        for key, s in zip(keys, per_class):
            metrics[f'{key}_precision'] = s['precision']
            metrics[f'{key}_recall'] = s['recall']
            metrics[f'{key}_f1'] = s['f1']
            if with_unann:
                metrics[f'{key}_unannotated_recall'] = s['unannotated_recall']
        metrics['mF1'] = float(np.mean([s['f1'] for s in per_class])) if per_class else 0.0
        if with_unann:
            unann_tp = sum(s['unann_tp'] for s in per_class)
            unann_gt = sum(s['unann_gt'] for s in per_class)
            metrics['unannotated_recall'] = _safe_div(unann_tp, unann_gt)
        rows = list(zip(classes, per_class))
        if self.class_agnostic:
            det = self._scores(counts[:, num_classes])
            metrics['det_precision'] = det['precision']
            metrics['det_recall'] = det['recall']
            metrics['det_f1'] = det['f1']
            if with_unann:
                metrics['det_unannotated_recall'] = det['unannotated_recall']
            rows.append(('(class-agnostic)', det))
        self._log_table(rows, with_unann, metrics['mF1'], len(results), logger)
        return metrics

    def _log_table(self, rows, with_unann: bool, mf1: float, num_images: int, logger) -> None:
        header = ['class', 'images', 'gt', 'pred', 'tp', 'precision', 'recall', 'f1']
        if with_unann:
            header += ['unannotated gt', 'unannotated recall']
        table = [header]
        for name, s in rows:
            line = [str(name), str(s['images']), str(s['gt']), str(s['pred']), str(s['tp']),
                    f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}"]
            if with_unann:
                line += [str(s['unann_gt']), f"{s['unannotated_recall']:.4f}"]
            table.append(line)
        title = (f'PointF1Metric mode={self.mode} (match={self.method}, '
                 f"{'d < r' if self.strict else 'd <= r'}, "
                 f"{'mean over images' if self.aggregation == 'image' else 'summed counts'}, "
                 f'r={self._radius_text()}, min_gt_per_image={self.min_gt_per_image}'
                 f"{', bug_compat' if self.bug_compat else ''}) on {num_images} images")
        print_log('\n' + title + '\n' + _format_table(table) + f'\nmF1: {mf1:.4f}',
                  logger=logger)

    def _radius_text(self) -> str:
        if self.radius_um is not None:
            return f'{self.radius_um:g} um'
        return f'{self.radius:g} px'


def _format_table(table: List[List[str]]) -> str:
    try:
        from terminaltables import AsciiTable
    except ImportError:  # pragma: no cover - terminaltables comes with mmdet
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row, widths))
                         for row in table)
    ascii_table = AsciiTable(table)
    ascii_table.inner_footing_row_border = False
    return ascii_table.table

