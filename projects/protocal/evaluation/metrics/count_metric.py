"""Counting metric for the MIL counter (mmseg ``METRICS``): LYSTO kappa, count MAE / MSE."""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from mmseg.registry import METRICS
from protocal.evaluation.functional.count_metrics import count_metrics
from protocal.utils import to_numpy

__all__ = ['CountKappaMetric']


def _field(sample: Any, key: str):
    if isinstance(sample, dict):
        return sample.get(key)
    return getattr(sample, key, None)


@METRICS.register_module()
class CountKappaMetric(BaseMetric):
    """Quadratic weighted kappa over the 7 LYSTO count categories, count MAE / MSE, category
    accuracy (see :func:`protocal.evaluation.functional.count_metrics`).

    Reads ``gt_count`` and ``pred_count`` of each data sample (tensors or numbers). A sample
    without ``gt_count`` (e.g. LYSTO ``test.h5``) raises ``ValueError``: use ``tools/test.py
    --out`` to export predictions for server-side scoring instead.
    """

    default_prefix: Optional[str] = 'count'

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        for s in data_samples:
            gt, pred = _field(s, 'gt_count'), _field(s, 'pred_count')
            if gt is None:
                raise ValueError('CountKappaMetric: a data sample has no gt_count (images '
                                 'without counts cannot be scored)')
            if pred is None:
                raise ValueError('CountKappaMetric: a data sample has no pred_count')
            self.results.append((float(np.asarray(to_numpy(gt)).reshape(-1)[0]),
                                 float(np.asarray(to_numpy(pred)).reshape(-1)[0])))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        gt = np.asarray([r[0] for r in results])
        pred = np.asarray([r[1] for r in results])
        m = count_metrics(gt, pred)
        print_log(f'CountKappaMetric on {m["images"]} images: kappa {m["kappa"]:.4f}, '
                  f'MAE {m["mae"]:.3f}, MSE {m["mse"]:.3f}, category accuracy '
                  f'{m["cls_accuracy"]:.4f}', logger='current')
        m.pop('images')
        return m
