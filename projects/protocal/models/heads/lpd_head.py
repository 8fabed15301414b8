"""CAM heads for segmentation from image-level labels (mmseg ``MODELS``).

* :class:`LearnablePrototypeCAMHead` (LPD): a bank of ``K`` learnable prototypes per class, one
  adaptive MLP per backbone stage projecting the bank to that stage's channels, and one learnable
  logit scale per stage; CAMs are scaled cosines (:func:`protocal.prototypes.prototype_cam`).
* :class:`LinearCAMHead`: the plain CAM baseline -- a linear (1x1 conv) classifier per stage,
  CAM = classifier applied per pixel, logit = its global average.

Both return ``dict(cams=[(B, M, h_s, w_s)] per stage, logits=[(B, M)] per stage)`` with
``M = num_classes * num_per_class`` subclass channels (class-major), and expose
``num_per_class`` and ``num_classes``.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...prototypes import class_slices, prototype_cam

__all__ = ['LearnablePrototypeCAMHead', 'LinearCAMHead']


@MODELS.register_module()
class LearnablePrototypeCAMHead(BaseModule):
    """LPD's learnable prototype bank and multi-stage CAMs.

    ``P`` is an ``(C*K, proto_dim)`` parameter drawn from N(0, 1) (seeded by the runner's seed).
    For stage ``s``: ``q_s = MLP_s(P)`` (Linear(D, D*hidden_ratio) -> ReLU -> Linear(., C_s)),
    ``A_s = tau_s * cos(F_s, q_s)``, ``z_s = GAP(A_s)``. ``tau_s`` starts at ``init_scale``
    (1/0.07), unclamped and not exponentiated, as in the reference.

    Args:
        num_classes: foreground classes ``C``.
        num_prototypes: ``K`` per class (int) or a per-class list.
        in_channels: channels of every backbone stage used (MiT-B1: 64, 128, 320, 512).
        proto_dim: prototype dimension (512 = the frozen encoder's embedding size in LPD).
        hidden_ratio: MLP hidden size = ``proto_dim * hidden_ratio`` (0.5).
        init_scale: initial logit scale.
        learnable_scale: train ``tau_s`` (True in LPD).
    """

    def __init__(self,
                 num_classes: int,
                 num_prototypes=10,
                 in_channels: Sequence[int] = (64, 128, 320, 512),
                 proto_dim: int = 512,
                 hidden_ratio: float = 0.5,
                 init_scale: float = 1 / 0.07,
                 learnable_scale: bool = True,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.num_per_class = num_prototypes if isinstance(num_prototypes, int) else list(
            num_prototypes)
        self.slices = class_slices(self.num_per_class, num_classes)
        self.num_subclasses = self.slices[-1].stop
        self.in_channels = tuple(in_channels)
        self.proto_dim = proto_dim
        self.prototypes = nn.Parameter(torch.randn(self.num_subclasses, proto_dim))
        hidden = max(1, int(proto_dim * hidden_ratio))
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(proto_dim, hidden), nn.ReLU(inplace=True),
                          nn.Linear(hidden, ch)) for ch in self.in_channels)
        scales = [torch.tensor(float(init_scale)) for _ in self.in_channels]
        if learnable_scale:
            self.logit_scales = nn.ParameterList(nn.Parameter(s) for s in scales)
        else:
            for i, s in enumerate(scales):
                self.register_buffer(f'_scale{i}', s)
            self.logit_scales = None
        self._init_projections()

    def _init_projections(self) -> None:
        for proj in self.projections:
            for m in proj:
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def init_weights(self) -> None:  # keep the reference init (trunc-normal 0.02 / N(0,1) bank)
        super().init_weights()

    def scale(self, stage: int) -> Tensor:
        if self.logit_scales is not None:
            return self.logit_scales[stage]
        return getattr(self, f'_scale{stage}')

    def projected_prototypes(self, stage: int) -> Tensor:
        return self.projections[stage](self.prototypes)

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, List[Tensor]]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f'{len(feats)} feature maps for {len(self.in_channels)} stages')
        cams, logits = [], []
        for s, feat in enumerate(feats):
            cam = prototype_cam(feat, self.projected_prototypes(s), self.scale(s))
            cams.append(cam)
            logits.append(cam.mean((2, 3)))
        return dict(cams=cams, logits=logits)


@MODELS.register_module()
class LinearCAMHead(BaseModule):
    """Plain CAM baseline: per stage a 1x1-conv linear classifier; CAM_s = conv(F_s),
    ``z_s = GAP(CAM_s)`` (= the linear classifier on GAP features). ``num_per_class = 1``."""

    def __init__(self, num_classes: int, in_channels: Sequence[int] = (64, 128, 320, 512),
                 bias: bool = True, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.num_per_class = 1
        self.num_subclasses = num_classes
        self.in_channels = tuple(in_channels)
        self.prototypes = None
        self.classifiers = nn.ModuleList(
            nn.Conv2d(ch, num_classes, 1, bias=bias) for ch in self.in_channels)

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, List[Tensor]]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f'{len(feats)} feature maps for {len(self.in_channels)} stages')
        cams = [cls(feat) for cls, feat in zip(self.classifiers, feats)]
        return dict(cams=cams, logits=[cam.mean((2, 3)) for cam in cams])
