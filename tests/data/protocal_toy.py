"""Toy model, dataset, metric and hook for the tool / runner tests (no protocal parts needed).

Importable as ``protocal_toy`` when ``tests/data`` is on ``sys.path`` (the tests set
``PYTHONPATH``); ``tests/data/configs/toy_runner.py`` loads it through ``custom_imports``. It
keeps the launcher and checkpoint tests independent of the real detector.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper
from torch.utils.data import Dataset

from mmdet.registry import DATASETS, HOOKS, METRICS, MODELS


@DATASETS.register_module()
class ToyRegressionDataset(Dataset):
    """``length`` deterministic 3x8x8 images; the target is the image mean times 2 plus 1."""

    metainfo = dict(classes=('toy', ))

    def __init__(self, length: int = 8, data_root: Optional[str] = None,
                 pipeline: Sequence = ()) -> None:
        gen = torch.Generator().manual_seed(1234)
        self.images = torch.rand(length, 3, 8, 8, generator=gen)
        self.targets = self.images.mean(dim=(1, 2, 3)) * 2 + 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        return dict(inputs=self.images[idx], target=self.targets[idx], idx=idx)


@MODELS.register_module()
class ToyRegressor(BaseModel):
    """A conv + linear regressor with a BatchNorm (its buffers go through DDP and checkpoints)."""

    def __init__(self, data_preprocessor: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 1)

    def forward(self, inputs: List[torch.Tensor], target: List[torch.Tensor],
                idx: Optional[List[int]] = None, mode: str = 'tensor') -> Any:
        x = torch.stack(list(inputs))
        pred = self.fc(self.bn(self.conv(x)).relu().mean(dim=(2, 3))).squeeze(1)
        if mode == 'loss':
            return dict(loss_mse=((pred - torch.stack(list(target)))**2).mean())
        if mode == 'predict':
            return [dict(pred=p.detach(), target=t, idx=i)
                    for p, t, i in zip(pred, target, idx)]
        return pred


@METRICS.register_module()
class ToyMAEMetric(BaseMetric):
    """Mean absolute error of ``ToyRegressor`` predictions."""

    default_prefix = 'toy'

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append(float((sample['pred'] - sample['target']).abs()))

    def compute_metrics(self, results: list) -> dict:
        return dict(mae=sum(results) / len(results), num_samples=len(results))


@HOOKS.register_module()
class ToyRankReportHook(Hook):
    """After training, every rank writes ``rank<r>.json``: world size, backend, wrapper, iters,
    number of samples it saw and a parameter checksum (identical across ranks under DDP)."""

    def before_train(self, runner) -> None:
        self.seen: List[int] = []

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self.seen.extend(int(i) for i in data_batch['idx'])

    def after_train(self, runner) -> None:
        import torch.distributed as dist
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        report = dict(
            rank=runner.rank,
            world_size=runner.world_size,
            backend=dist.get_backend() if dist.is_initialized() else None,
            wrapper=type(runner.model).__name__,
            iter=runner.iter,
            seen=self.seen,
            checksum=float(sum(p.detach().double().sum() for p in model.parameters())))
        with open(osp.join(runner.work_dir, f'rank{runner.rank}.json'), 'w') as f:
            json.dump(report, f)
