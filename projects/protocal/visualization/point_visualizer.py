"""Draw point (cell) detections, their match to the ground truth and the predicted heatmap.

Legend (one overlay, no side-by-side panels, so that a prediction and the cell it should hit are
seen together):

* filled dot, class colour: a prediction;
* green ring around a prediction: true positive (matched to a GT point of the same class within
  the match radius);
* red cross over a prediction: false positive;
* yellow ring: a GT point no prediction matched (false negative);
* without predictions to compare (GT only): GT points as rings in their class colour.

A legend box in the top-left corner repeats this with the counts and states the match radius in
pixels of the original image (set it to the metric's radius: ``match_radius`` of the visualizer).
Small tiles can be drawn ``upscale`` times larger (nearest neighbour, so pixels stay sharp), with
markers and legend sized for the larger image. Everything is drawn with OpenCV on a numpy array,
so it works headless and fast for thousands of points.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import mmcv
import numpy as np
from mmdet.registry import VISUALIZERS
from mmengine.visualization import Visualizer

from protocal.utils import to_numpy
from ..evaluation.functional import as_points, match_points_by_class, points_to_original

__all__ = [
    'PointDetLocalVisualizer', 'draw_points_overlay', 'get_palette', 'DEFAULT_PALETTE',
    'TP_COLOR', 'FP_COLOR', 'FN_COLOR'
]

#: RGB class colours (colour-blind-safe Okabe-Ito hues first), avoiding the outcome colours below
DEFAULT_PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (0, 114, 178), (230, 159, 0), (204, 121, 167), (86, 180, 233), (148, 103, 189),
    (140, 86, 75), (0, 158, 115), (127, 127, 127), (23, 190, 207), (188, 189, 34))
#: RGB colours of the match outcomes
TP_COLOR = (0, 255, 0)
FP_COLOR = (255, 0, 0)
FN_COLOR = (255, 255, 0)
_SHIFT = 4  # sub-pixel drawing: coordinates are passed to OpenCV in 1/16 pixel
_ONE = 1 << _SHIFT


def get_palette(num_classes: int, palette: Optional[Sequence] = None) -> List[Tuple[int, int, int]]:
    """One RGB colour per class: ``palette`` (checked) or :data:`DEFAULT_PALETTE` (cycled)."""
    if palette is None:
        return [DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(num_classes)]
    colours = []
    for i, colour in enumerate(palette):
        c = tuple(int(v) for v in colour)
        if len(c) != 3 or any(v < 0 or v > 255 for v in c):
            raise ValueError(f'palette[{i}] must be an (r, g, b) triple of 0-255 ints, '
                             f'got {colour}')
        colours.append(c)
    if len(colours) < num_classes:
        raise ValueError(f'palette has {len(colours)} colours for {num_classes} classes')
    return colours[:num_classes]


def _instances(inst: Any, with_scores: bool, name: str) -> Dict[str, np.ndarray]:
    """points / labels (/ scores) of a dict or InstanceData as numpy arrays."""
    if isinstance(inst, dict):
        get = inst.get
    else:
        def get(key, default=None):
            return getattr(inst, key, default)

    points = as_points(to_numpy(get('points', np.zeros((0, 2)))), f'{name}.points')
    labels = to_numpy(get('labels', None))
    labels = (np.zeros(len(points), np.int64)
              if labels is None else np.asarray(labels, np.int64).reshape(-1))
    if len(labels) != len(points):
        raise ValueError(f'{name}.labels has {len(labels)} values for {len(points)} points')
    out = dict(points=points, labels=labels)
    if with_scores:
        scores = to_numpy(get('scores', None))
        scores = (np.ones(len(points)) if scores is None else np.asarray(scores,
                                                                         np.float64).reshape(-1))
        if len(scores) != len(points):
            raise ValueError(f'{name}.scores has {len(scores)} values for {len(points)} points')
        out['scores'] = scores
    return out


def _fixed(x: float, y: float) -> Tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _ring(img, xy, radius, colour, width):
    cv2.circle(img, _fixed(*xy), int(round(radius * _ONE)), colour, width, cv2.LINE_AA, _SHIFT)


def _dot(img, xy, radius, colour):
    cv2.circle(img, _fixed(*xy), int(round(radius * _ONE)), colour, -1, cv2.LINE_AA, _SHIFT)


def _cross(img, xy, half, colour, width):
    x, y = xy
    cv2.line(img, _fixed(x - half, y - half), _fixed(x + half, y + half), colour, width,
             cv2.LINE_AA, _SHIFT)
    cv2.line(img, _fixed(x - half, y + half), _fixed(x + half, y - half), colour, width,
             cv2.LINE_AA, _SHIFT)


def _blend_heatmap(img: np.ndarray, heatmap: Any, alpha: float) -> np.ndarray:
    """Alpha-blend the max foreground probability (JET colours, weight ``alpha * p``)."""
    prob = np.asarray(to_numpy(heatmap), np.float32)
    if prob.ndim == 3:
        if prob.shape[0] < 2:
            raise ValueError(f'heatmap must be (K + 1, H, W) with K >= 1 or (H, W), got '
                             f'{prob.shape}')
        prob = prob[1:].max(0)
    elif prob.ndim != 2:
        raise ValueError(f'heatmap must be (K + 1, H, W) or (H, W), got {prob.shape}')
    prob = np.nan_to_num(prob, nan=0.0).clip(0.0, 1.0)
    h, w = img.shape[:2]
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap((prob * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = (alpha * prob)[..., None]
    out = img.astype(np.float32) * (1 - weight) + colours.astype(np.float32) * weight
    return out.round().clip(0, 255).astype(np.uint8)


def _draw_legend(img: np.ndarray, entries: List[Tuple[str, str, Tuple[int, int, int]]],
                 size: float = 1.0) -> None:
    """Legend box in the top-left corner; ``entries`` are (symbol, text, colour)."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * size, max(1, int(round(size)))
    line_h, pad, icon = int(round(15 * size)), int(round(5 * size)), int(round(12 * size))
    text_w = max(cv2.getTextSize(text, font, scale, thick)[0][0] for _, text, _ in entries)
    box_w = min(img.shape[1], pad * 3 + icon + text_w)
    box_h = min(img.shape[0], pad * 2 + line_h * len(entries))
    region = img[:box_h, :box_w]
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)
    for i, (symbol, text, colour) in enumerate(entries):
        cy = pad + line_h * i + line_h // 2
        cx = pad + icon // 2
        width = max(2, int(round(2 * size)))
        if symbol == 'dot':
            _dot(img, (cx, cy), 3 * size, colour)
        elif symbol == 'ring':
            _ring(img, (cx, cy), 5 * size, colour, width)
        else:
            _cross(img, (cx, cy), 4 * size, colour, width)
        cv2.putText(img, text, (pad * 2 + icon, cy + int(round(4 * size))), font, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)


def draw_points_overlay(image_rgb: np.ndarray,
                        pred: Optional[Dict[str, Any]] = None,
                        gt: Optional[Dict[str, Any]] = None,
                        classes: Optional[Sequence[str]] = None,
                        palette: Optional[Sequence] = None,
                        radius: float = 15.0,
                        *,
                        heatmap: Any = None,
                        heatmap_alpha: float = 0.5,
                        score_thr: float = 0.0,
                        match_method: str = 'bipartite',
                        strict: Optional[bool] = None,
                        point_radius: float = 3.0,
                        ring_radius: float = 8.0,
                        line_width: int = 2,
                        legend: bool = True,
                        upscale: int = 1) -> np.ndarray:
    """Draw predictions (and GT with TP/FP/FN colours) on an RGB image; see the module legend.

    Args:
        image_rgb: ``(H, W, 3)`` (or ``(H, W)``) uint8 image, RGB.
        pred: ``dict(points (M, 2), labels (M,), scores (M,))`` (numpy or tensors), or ``None``.
        gt: ``dict(points (N, 2), labels (N,))`` in the same pixels as ``pred``, or ``None``.
        classes: class names for the legend (default ``class_0``, ...).
        palette: RGB colour per class (default :data:`DEFAULT_PALETTE`).
        radius: match radius in pixels for the TP/FP/FN colours (class-aware matching).
        heatmap: optional ``(K + 1, H', W')`` probabilities (or ``(H', W')`` foreground map); its
            max foreground probability is blended in with weight ``heatmap_alpha * p``.
        score_thr: predictions with a lower score are not drawn (nor matched).
        match_method, strict: passed to :func:`~protocal.evaluation.functional.match_points`.
        point_radius, ring_radius, line_width: marker sizes in pixels of the drawn image.
        legend: draw the legend box.
        upscale: integer factor ``s``; the image is enlarged by nearest-neighbour repetition
            before drawing (points map as ``x' = (x + 0.5) * s - 0.5``); markers, line widths and
            the legend grow with ``s / 2`` so that they stay readable. Matching and the legend's
            radius stay in original pixels.

    Returns:
        A new ``(H * upscale, W * upscale, 3)`` uint8 RGB image.
    """
    if int(upscale) != upscale or upscale < 1:
        raise ValueError(f'upscale must be a positive integer, got {upscale!r}')
    upscale = int(upscale)
    img = np.asarray(image_rgb)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f'image must be (H, W, 3) RGB, got shape {img.shape}')
    img = np.ascontiguousarray(img[..., :3].clip(0, 255).astype(np.uint8))
    pred = None if pred is None else _instances(pred, True, 'pred')
    gt = None if gt is None else _instances(gt, False, 'gt')
    if pred is not None and score_thr > 0:
        keep = pred['scores'] >= score_thr
        pred = {k: v[keep] for k, v in pred.items()}
    labels = [d['labels'] for d in (pred, gt) if d is not None]
    max_label = max([int(x.max()) for x in labels if len(x)], default=-1)
    num_classes = max(len(classes) if classes is not None else 0, max_label + 1)
    if (min([int(x.min()) for x in labels if len(x)], default=0) < 0 or
            (classes is not None and max_label >= len(classes))):
        raise ValueError(f'labels must be in [0, {num_classes - 1}] for classes {classes}')
    names = list(classes) if classes is not None else [f'class_{i}' for i in range(num_classes)]
    colours = get_palette(num_classes, palette)

    if heatmap is not None:
        img = _blend_heatmap(img, heatmap, heatmap_alpha)
    size = max(1.0, upscale / 2)
    if upscale > 1:
        img = np.ascontiguousarray(np.repeat(np.repeat(img, upscale, axis=0), upscale, axis=1))
        point_radius, ring_radius = point_radius * size, ring_radius * size
        line_width = max(int(line_width), int(round(line_width * size * 0.75)))

    def up(xy):
        return (np.asarray(xy, np.float64) + 0.5) * upscale - 0.5

    entries = []
    if pred is not None and gt is not None:
        p_idx, g_idx = match_points_by_class(pred['points'], pred['labels'], gt['points'],
                                             gt['labels'], radius, match_method,
                                             pred['scores'], strict)
        tp = np.zeros(len(pred['points']), bool)
        tp[p_idx] = True
        fn = np.ones(len(gt['points']), bool)
        fn[g_idx] = False
        for xy in up(gt['points'][fn]):
            _ring(img, xy, ring_radius, FN_COLOR, line_width)
        for xy, lab in zip(up(pred['points']), pred['labels']):
            _dot(img, xy, point_radius, colours[lab])
        for xy in up(pred['points'][tp]):
            _ring(img, xy, ring_radius, TP_COLOR, line_width)
        for xy in up(pred['points'][~tp]):
            _cross(img, xy, ring_radius * 0.75, FP_COLOR, line_width)
        entries += [('ring', f'TP {int(tp.sum())} (match r={radius:g} px)', TP_COLOR),
                    ('cross', f'FP {int((~tp).sum())}', FP_COLOR),
                    ('ring', f'FN {int(fn.sum())}', FN_COLOR)]
    elif pred is not None:
        for xy, lab in zip(up(pred['points']), pred['labels']):
            _dot(img, xy, point_radius, colours[lab])
    elif gt is not None:
        for xy, lab in zip(up(gt['points']), gt['labels']):
            _ring(img, xy, ring_radius, colours[lab], line_width)
    if legend and (pred is not None or gt is not None) and (names or entries):
        symbol = 'dot' if pred is not None else 'ring'
        kind = 'pred' if pred is not None else 'GT'
        entries = [(symbol, f'{kind} {name}', colour)
                   for name, colour in zip(names, colours)] + entries
        _draw_legend(img, entries, size=size)
    return img


def _field(sample: Any, key: str) -> Any:
    if sample is None:
        return None
    if isinstance(sample, dict):
        return sample.get(key)
    return sample.get(key) if hasattr(sample, 'get') else getattr(sample, key, None)


def _unique_out_file(out_file: str, data_sample: Any) -> str:
    """``<dir>/<img_id>.png`` when the sample's ``img_id`` is not the file's stem, else as is."""
    import os.path as osp
    img_id = _field(data_sample, 'img_id') if data_sample is not None else None
    if img_id is None and data_sample is not None and hasattr(data_sample, 'metainfo'):
        img_id = data_sample.metainfo.get('img_id')
    stem, ext = osp.splitext(osp.basename(out_file))
    if img_id is None or str(img_id) == stem:
        return out_file
    return osp.join(osp.dirname(out_file), f'{img_id}{ext or ".png"}')


@VISUALIZERS.register_module()
class PointDetLocalVisualizer(Visualizer):
    """Visualizer for point detectors, usable by mmdet's ``DetVisualizationHook``.

    ``tools/test.py --show-dir DIR`` (or ``default_hooks.visualization.draw=True``) writes one
    overlay per test image. See the module docstring for the legend.

    Args:
        name: instance name (mmengine ``ManagerMixin``).
        image: optional initial image.
        vis_backends: mmengine visualization backends (used when no ``out_file`` is given).
        save_dir: directory of the backends.
        match_radius: TP/FP/FN match radius in pixels (class-aware matching).
        match_method: ``'bipartite'``, ``'hungarian'`` or ``'greedy'``.
        strict: boundary convention of the matching (``None``: the method's).
        draw_heatmap: blend ``pred_heatmap`` (set by ``test_cfg.return_heatmap=True``).
        heatmap_alpha: maximum opacity of the heatmap.
        palette: RGB colour per class; default ``dataset_meta['palette']`` then
            :data:`DEFAULT_PALETTE`.
        point_radius, ring_radius, line_width: marker sizes in pixels of the drawn image.
        show_legend: draw the legend box.
        upscale: draw the overlay this many times larger (nearest neighbour); see
            :func:`draw_points_overlay`.

    Written files (``out_file``) are named after the sample's ``img_id`` when it differs from
    the image file's stem (tile-folder datasets, whose images are all ``image.png``), so that
    overlays of different tiles do not overwrite each other.
    """

    def __init__(self,
                 name: str = 'visualizer',
                 image: Optional[np.ndarray] = None,
                 vis_backends: Optional[List[Dict]] = None,
                 save_dir: Optional[str] = None,
                 match_radius: float = 15.0,
                 match_method: str = 'bipartite',
                 strict: Optional[bool] = None,
                 draw_heatmap: bool = False,
                 heatmap_alpha: float = 0.5,
                 palette: Optional[Sequence] = None,
                 point_radius: float = 3.0,
                 ring_radius: float = 8.0,
                 line_width: int = 2,
                 show_legend: bool = True,
                 upscale: int = 1) -> None:
        super().__init__(name=name, image=image, vis_backends=vis_backends, save_dir=save_dir)
        if match_radius <= 0:
            raise ValueError(f'match_radius must be positive, got {match_radius}')
        if int(upscale) != upscale or upscale < 1:
            raise ValueError(f'upscale must be a positive integer, got {upscale!r}')
        self.upscale = int(upscale)
        self.match_radius = float(match_radius)
        self.match_method = match_method
        self.strict = strict
        self.draw_heatmap = draw_heatmap
        self.heatmap_alpha = float(heatmap_alpha)
        self.palette = palette
        self.point_radius = point_radius
        self.ring_radius = ring_radius
        self.line_width = int(line_width)
        self.show_legend = show_legend

    def _meta(self) -> dict:
        return getattr(self, 'dataset_meta', None) or {}

    def draw_sample(self,
                    image: np.ndarray,
                    data_sample: Any = None,
                    draw_gt: bool = True,
                    draw_pred: bool = True,
                    pred_score_thr: float = 0.0) -> np.ndarray:
        """The overlay of ``data_sample`` on ``image`` (RGB), without saving or showing it."""
        meta = self._meta()
        classes = meta.get('classes')
        palette = self.palette if self.palette is not None else meta.get('palette')
        gt = pred = heatmap = None
        gt_inst = _field(data_sample, 'gt_instances') if draw_gt else None
        if gt_inst is not None:
            gt = _instances(gt_inst, False, 'gt_instances')
            scale = _field(data_sample, 'scale_factor')
            if scale is not None:  # GT is in the network input, the image is the original
                gt['points'] = points_to_original(gt['points'], scale)
        pred_inst = _field(data_sample, 'pred_instances') if draw_pred else None
        if pred_inst is not None:
            pred = _instances(pred_inst, True, 'pred_instances')
        if draw_pred and self.draw_heatmap:
            pixel_data = _field(data_sample, 'pred_heatmap')
            if pixel_data is not None:
                heatmap = _field(pixel_data, 'data')
        return draw_points_overlay(
            image, pred=pred, gt=gt, classes=classes, palette=palette, radius=self.match_radius,
            heatmap=heatmap, heatmap_alpha=self.heatmap_alpha, score_thr=pred_score_thr,
            match_method=self.match_method, strict=self.strict, point_radius=self.point_radius,
            ring_radius=self.ring_radius, line_width=self.line_width, legend=self.show_legend,
            upscale=self.upscale)

    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample: Any = None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       pred_score_thr: float = 0.0,
                       step: int = 0) -> None:
        """Draw ``data_sample`` on ``image`` (RGB) and show it, write it to ``out_file`` or send
        it to the backends (same behaviour as mmdet's ``DetLocalVisualizer``)."""
        drawn = self.draw_sample(image, data_sample, draw_gt, draw_pred, pred_score_thr)
        self.set_image(drawn)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(drawn[..., ::-1], _unique_out_file(out_file, data_sample))
        else:
            self.add_image(name, drawn, step)
