"""Stage 1 of MIL counting: the image-wise counter (an mmpretrain-style image classifier).

``backbone`` (any registered backbone, ResNet-50 by default) -> last feature map ``x4`` ->
``g = GAP(x4) + GMP(x4)`` -> two heads with the reference layout
``BN1d(C) -> Dropout(0.25) -> ReLU -> Linear(C, 64) -> BN1d(64) -> Dropout(0.5) ->
Linear(64, out)``:
``out = 7`` count-category logits and ``out = 1`` count followed by ReLU (non-negative).
Loss ``alpha * CE + beta * MSE`` (:class:`~protocal.models.losses.MILCountLoss`).
Prediction: ``pred_count = round(reg)``; with ``cls_limit=True`` it is clamped into the range of
the argmax category (the reference's ``--cls_limit``).
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from mmseg.registry import MODELS

__all__ = ['MILCounter', 'gap_gmp', 'mil_mlp_head']


def gap_gmp(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w) -> (B, C)``: global average pool + global max pool (summed)."""
    return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))


def mil_mlp_head(in_channels: int, out: int, hidden: int = 64, drop1: float = 0.25,
                 drop2: float = 0.5) -> nn.Sequential:
    """The reference's image head layout (see the module docstring)."""
    return nn.Sequential(
        nn.BatchNorm1d(in_channels), nn.Dropout(drop1), nn.ReLU(inplace=True),
        nn.Linear(in_channels, hidden), nn.BatchNorm1d(hidden), nn.Dropout(drop2),
        nn.Linear(hidden, out))


def backbone_last(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    feats = backbone(x)
    if isinstance(feats, (list, tuple)):
        feats = feats[-1]
    return feats


@MODELS.register_module()
class MILCounter(BaseModel):
    """Image-wise positive-cell counter (category classification + count regression).

    Args:
        backbone: backbone config (``mmseg`` / ``mmdet`` / ``mmpretrain`` registries through
            scoped types); its last output is pooled.
        in_channels: channels of that last output (2048 for ResNet-50, 512 for ResNet-18).
        num_categories: count categories (7, LYSTO).
        hidden: hidden width of both heads (64).
        loss: loss config (``MILCountLoss``, ``alpha = beta = 1``).
        cls_limit: clamp the rounded count into the predicted category's range.
        data_preprocessor: e.g. ``ImgDataPreprocessor`` with ImageNet mean / std, ``bgr_to_rgb``.
    """

    def __init__(self,
                 backbone: dict,
                 in_channels: int = 2048,
                 num_categories: int = 7,
                 hidden: int = 64,
                 loss: dict = dict(type='MILCountLoss', alpha=1.0, beta=1.0),
                 cls_limit: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.cls_head = mil_mlp_head(in_channels, num_categories, hidden)
        self.reg_head = mil_mlp_head(in_channels, 1, hidden)
        self.loss_module = MODELS.build(loss)
        self.num_categories = int(num_categories)
        self.cls_limit = bool(cls_limit)

    # ------------------------------------------------------------------ forward
    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        return gap_gmp(backbone_last(self.backbone, inputs))

    def _heads(self, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        bn_train = self.training and g.shape[0] == 1
        if bn_train:  # BatchNorm1d cannot train on one sample: use running statistics
            bns = [m for m in (*self.cls_head, *self.reg_head) if isinstance(m, nn.BatchNorm1d)]
            for m in bns:
                m.eval()
        cls_logits = self.cls_head(g)
        reg = torch.relu(self.reg_head(g)).reshape(-1)
        if bn_train:
            for m in bns:
                m.train()
        return cls_logits, reg

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._heads(self.extract_feat(inputs))
        raise RuntimeError(f'Invalid mode "{mode}"')

    def loss(self, inputs: torch.Tensor, data_samples: List) -> Dict[str, torch.Tensor]:
        if any(getattr(s, 'gt_count', None) is None for s in data_samples):
            raise ValueError('MILCounter: a training sample has no gt_count')
        cls_logits, reg = self._heads(self.extract_feat(inputs))
        gt_count = torch.cat([s.gt_count for s in data_samples]).to(reg.device)
        gt_cls = torch.cat([s.gt_count_cls for s in data_samples]).to(reg.device)
        return self.loss_module(cls_logits, reg, gt_cls, gt_count)

    @torch.no_grad()
    def predict_counts(self, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``count`` (rounded, float), ``count_raw``, ``category`` and ``cls_scores`` per image."""
        cls_logits, reg = self._heads(self.extract_feat(inputs))
        cat = cls_logits.argmax(1)
        count = torch.round(reg)
        if self.cls_limit:
            from protocal.datasets.counting import category_range
            lo = torch.tensor([category_range(int(c))[0] for c in cat], device=reg.device)
            hi = torch.tensor([category_range(int(c))[1] for c in cat], device=reg.device)
            count = torch.minimum(torch.maximum(count, lo.float()), hi.float())
        return dict(count=count, count_raw=reg, category=cat, cls_scores=cls_logits.softmax(1))

    def predict(self, inputs: torch.Tensor, data_samples: Optional[List] = None) -> List:
        out = self.predict_counts(inputs)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(inputs.shape[0])]
        for i, s in enumerate(data_samples):
            s.pred_count = out['count'][i:i + 1]
            s.pred_count_raw = out['count_raw'][i:i + 1]
            s.pred_count_cls = out['category'][i:i + 1]
            s.pred_cls_scores = out['cls_scores'][i]
        return data_samples
