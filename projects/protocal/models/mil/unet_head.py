"""Stage 3 of MIL counting: U-Net-like decode head on the (frozen) counter encoder (mmseg).

Generalises the reference decoder (ResNet-50 channels 256/512/1024/2048) to any 4-stage backbone
with channels ``c1..c4``; each "conv" is Conv3x3 + BN + ReLU, every upsampling is bilinear with
``align_corners=True``::

    up(x4 -> size of x3), conv c4->c3 ; cat x3, conv 2c3->c3
    up(-> x2), conv c3->c2            ; cat x2, conv 2c2->c2
    up(-> x1), conv c2->c1            ; cat x1, conv 2c1->c1
    up(x2), conv c1->c1/2, conv c1/2->c1/4 ; conv1x1 -> 2 classes

The reference then upsamples to the input size before the 1x1 conv; both are linear, so mmseg's
final bilinear resize of the logits (``align_corners=True``) gives the same result.
"""
from typing import List

import torch
from mmcv.cnn import ConvModule

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS

__all__ = ['MILUNetHead']


@MODELS.register_module()
class MILUNetHead(BaseDecodeHead):
    """U-Net decode head of the MIL segmentation stage.

    Args:
        in_channels: channels of the 4 backbone stages (e.g. ``[256, 512, 1024, 2048]``).
        channels: width of the last conv (``c1 / 4``; 64 for ResNet-50).
        Others: :class:`mmseg.models.decode_heads.decode_head.BaseDecodeHead`
        (``in_index=[0, 1, 2, 3]``, ``input_transform='multiple_select'``).
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault('input_transform', 'multiple_select')
        kwargs.setdefault('in_index', [0, 1, 2, 3])
        kwargs.setdefault('align_corners', True)
        kwargs.setdefault('norm_cfg', dict(type='BN', requires_grad=True))
        kwargs.setdefault('dropout_ratio', 0.0)
        super().__init__(**kwargs)
        c1, c2, c3, c4 = self.in_channels
        cfg = dict(kernel_size=3, padding=1, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
                   act_cfg=self.act_cfg)
        self.up4 = ConvModule(c4, c3, **cfg)
        self.fuse3 = ConvModule(2 * c3, c3, **cfg)
        self.up3 = ConvModule(c3, c2, **cfg)
        self.fuse2 = ConvModule(2 * c2, c2, **cfg)
        self.up2 = ConvModule(c2, c1, **cfg)
        self.fuse1 = ConvModule(2 * c1, c1, **cfg)
        self.up1 = ConvModule(c1, c1 // 2, **cfg)
        self.out_conv = ConvModule(c1 // 2, self.channels, **cfg)

    def _up(self, x: torch.Tensor, size) -> torch.Tensor:
        return resize(x, size=size, mode='bilinear', align_corners=True)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        x1, x2, x3, x4 = self._transform_inputs(inputs)
        x = self.up4(self._up(x4, x3.shape[2:]))
        x = self.fuse3(torch.cat([x, x3], 1))
        x = self.up3(self._up(x, x2.shape[2:]))
        x = self.fuse2(torch.cat([x, x2], 1))
        x = self.up2(self._up(x, x1.shape[2:]))
        x = self.fuse1(torch.cat([x, x1], 1))
        x = self.up1(self._up(x, [2 * x1.shape[2], 2 * x1.shape[3]]))
        x = self.out_conv(x)
        return self.cls_seg(x)
