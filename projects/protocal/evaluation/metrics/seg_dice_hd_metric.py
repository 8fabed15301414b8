"""Per-class Dice, HD95, ASD and ASSD per image (2D) or per volume (mmseg ``METRICS``).

Scores come from :func:`protocal.evaluation.functional.seg_distances.binary_seg_metrics` (medpy
definitions, documented empty-mask conventions); they are averaged over images (or volumes) per
class, then over the evaluated classes (``mDice``, ``mHD95``, ``mASD``, ``mASSD``). Ground-truth
pixels equal to ``ignore_index`` are excluded (set to background in both maps).
"""
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.registry import METRICS

from protocal.evaluation.functional.seg_distances import EMPTY_CONVENTIONS, binary_seg_metrics

__all__ = ['DiceHD95Metric']

_KEYS = ('dice', 'hd95', 'asd', 'assd')


@METRICS.register_module()
class DiceHD95Metric(BaseMetric):
    """Dice / HD95 / ASD / ASSD of segmentation predictions.

    Args:
        classes: class indices to evaluate (default: every class but background 0).
        regions: extra nested regions, name -> class indices (e.g. ``{'disc': [1, 2]}`` for
            optic disc = cup + rim, spec 7); evaluated as the union of those classes.
        mode: ``'2d'`` (per image, reference) or ``'volume'`` (slices grouped by the
            ``volume_key`` meta field, ordered by ``slice_key`` if present, else by arrival).
        spacing: pixel / voxel size for distances (default 1 = pixels).
        empty: empty-mask convention (``'penalty'``, ``'nan'``, ``'reference'``).
        ignore_index: GT value excluded from evaluation.
    """

    default_prefix = None

    def __init__(self,
                 classes: Optional[Sequence[int]] = None,
                 regions: Optional[Dict[str, Sequence[int]]] = None,
                 mode: str = '2d',
                 volume_key: str = 'volume_id',
                 slice_key: str = 'slice_index',
                 spacing: Optional[Sequence[float]] = None,
                 empty: str = 'penalty',
                 ignore_index: int = 255,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if mode not in ('2d', 'volume'):
            raise ValueError(f"mode must be '2d' or 'volume', got {mode!r}")
        if empty not in EMPTY_CONVENTIONS:
            raise ValueError(f'empty must be one of {EMPTY_CONVENTIONS}, got {empty!r}')
        self.classes = list(classes) if classes is not None else None
        self.regions = {k: list(v) for k, v in (regions or {}).items()}
        self.mode = mode
        self.volume_key = volume_key
        self.slice_key = slice_key
        self.spacing = tuple(spacing) if spacing is not None else None
        self.empty = empty
        self.ignore_index = ignore_index

    def _targets(self) -> List[tuple]:
        names = (self.dataset_meta or {}).get('classes')
        classes = self.classes
        if classes is None:
            if names is None:
                raise ValueError('DiceHD95Metric needs `classes` or dataset_meta["classes"]')
            classes = list(range(1, len(names)))
        out = [(str(names[c]) if names is not None and c < len(names) else f'class{c}', [c])
               for c in classes]
        out += [(name, ids) for name, ids in self.regions.items()]
        return out

    def _score(self, pred: np.ndarray, gt: np.ndarray, spacing) -> Dict[str, Dict[str, float]]:
        keep = gt != self.ignore_index
        scores = {}
        for name, ids in self._targets():
            p = np.isin(pred, ids) & keep
            g = np.isin(gt, ids) & keep
            scores[name] = binary_seg_metrics(p, g, spacing, self.empty)
        return scores

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = np.asarray(sample['pred_sem_seg']['data'].squeeze(0).cpu().numpy())
            gt = np.asarray(sample['gt_sem_seg']['data'].squeeze(0).cpu().numpy())
            if self.mode == '2d':
                self.results.append(dict(scores=self._score(pred, gt, self.spacing)))
            else:
                volume = sample.get(self.volume_key)
                if volume is None:
                    raise KeyError(f'volume mode needs the {self.volume_key!r} meta field '
                                   f"({sample.get('img_path')})")
                self.results.append(dict(volume=str(volume),
                                         slice=sample.get(self.slice_key),
                                         pred=pred.astype(np.uint8), gt=gt.astype(np.uint8)))

    def _volume_scores(self, results: list) -> List[dict]:
        groups = defaultdict(list)
        for i, item in enumerate(results):
            order = item['slice'] if item['slice'] is not None else i
            groups[item['volume']].append((order, item['pred'], item['gt']))
        out = []
        for volume in sorted(groups):
            slices = sorted(groups[volume], key=lambda t: t[0])
            pred = np.stack([s[1] for s in slices])
            gt = np.stack([s[2] for s in slices])
            out.append(dict(scores=self._score(pred, gt, self.spacing)))
        return out

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if self.mode == 'volume':
            results = self._volume_scores(results)
        metrics: Dict[str, float] = OrderedDict()
        table = []
        per_key = {k: [] for k in _KEYS}
        for name, _ in self._targets():
            row = [name]
            for key in _KEYS:
                values = np.array([r['scores'][name][key] for r in results], dtype=np.float64)
                finite = values[~np.isnan(values)]
                mean = float(finite.mean()) if finite.size else float('nan')
                metrics[f'{key_name(key)}.{name}'] = mean
                per_key[key].append(mean)
                row.append(f'{mean:.4f}')
            row.append(str(int(np.isnan(values).sum())))
            table.append(row)
        for key in _KEYS:
            metrics[f'm{key_name(key)}'] = float(np.nanmean(per_key[key])) if per_key[key] else 0.
            values = np.array([[r['scores'][n][key] for n, _ in self._targets()] for r in results],
                              dtype=np.float64)
            metrics[f'm{key_name(key)}_std'] = float(np.nanstd(np.nanmean(values, axis=1))) \
                if values.size else 0.0
        unit = 'volumes' if self.mode == 'volume' else 'images'
        lines = [f'DiceHD95Metric over {len(results)} {unit} (empty={self.empty}):',
                 'class | Dice | HD95 | ASD | ASSD | #NaN']
        lines += [' | '.join(r) for r in table]
        print_log('\n'.join(lines), logger='current')
        return metrics


def key_name(key: str) -> str:
    return {'dice': 'Dice', 'hd95': 'HD95', 'asd': 'ASD', 'assd': 'ASSD'}[key]
