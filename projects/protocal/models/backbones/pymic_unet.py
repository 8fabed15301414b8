"""The PyMIC-style 2D U-Net used by ProCNS and WSL4MIS (spec section 2), as an mmseg backbone.

Re-implemented from the spec's description (no reference code reused). It returns **all** encoder
and decoder feature maps, so a decode head picks the last one (``in_index=-1``) and the ProCNS loss
picks its PRSA features by index (default: encoder level 4 = index 3, 128 ch at stride 8, and
decoder block 3 = index 7, 32 ch at stride 2).
"""
from typing import List, Sequence, Tuple

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

__all__ = ['PyMICUNet']


class _ConvBlock(nn.Sequential):
    """Conv3x3 -> BN -> LeakyReLU(0.01) -> Dropout(p) -> Conv3x3 -> BN -> LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01), nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01))


class _UpBlock(nn.Module):
    """ConvTranspose2d(k=2, s=2) deep -> skip channels, concat [skip, up], conv block."""

    def __init__(self, deep_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(deep_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = _ConvBlock(2 * skip_channels, skip_channels, 0.0)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        up = self.up(deep)
        if up.shape[-2:] != skip.shape[-2:]:  # odd sizes: pad the up-sampled map
            dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
            up = nn.functional.pad(up, (0, dw, 0, dh))
        return self.conv(torch.cat([skip, up], dim=1))


@MODELS.register_module()
class PyMICUNet(BaseModule):
    """2D U-Net with 4 down / 4 up levels (channels 16..256, encoder dropout 0.05..0.5).

    Args:
        in_channels: image channels.
        channels: encoder channels of the 5 levels.
        dropout: encoder dropout per level (decoder blocks use 0).

    Returns (forward):
        tuple of 9 maps: encoder levels 0-4 (strides 1, 2, 4, 8, 16) then decoder blocks d1-d4
        (strides 8, 4, 2, 1). Inputs should be divisible by 16 (others are handled by padding the
        up-sampled maps).
    """

    def __init__(self,
                 in_channels: int = 3,
                 channels: Sequence[int] = (16, 32, 64, 128, 256),
                 dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(channels) != 5 or len(dropout) != 5:
            raise ValueError('PyMICUNet needs 5 channel counts and 5 dropout rates, got '
                             f'{len(channels)} and {len(dropout)}')
        self.channels = tuple(channels)
        self.in_conv = _ConvBlock(in_channels, channels[0], dropout[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _ConvBlock(channels[i], channels[i + 1], dropout[i + 1]))
            for i in range(4))
        self.up = nn.ModuleList(_UpBlock(channels[4 - i], channels[3 - i]) for i in range(4))

    @property
    def out_channels(self) -> Tuple[int, ...]:
        return self.channels + tuple(reversed(self.channels[:4]))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        enc: List[Tensor] = [self.in_conv(x)]
        for block in self.down:
            enc.append(block(enc[-1]))
        dec: List[Tensor] = []
        deep = enc[4]
        for i, block in enumerate(self.up):
            deep = block(deep, enc[3 - i])
            dec.append(deep)
        return tuple(enc + dec)
