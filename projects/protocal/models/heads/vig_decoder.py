"""The SEL / PCL decoder and node-feature branch on top of :class:`IsotropicViG` block outputs.

Written from the description in the project's spec (``specs/pcl_sel.md`` sections 2.3 and 2.4);
no code of the reference implementations is reused. The module is not registered: a registered
head (a :class:`BaseHeatmapPointHead` subclass) wraps it and adds targets, losses and decoding.
"""
from collections import OrderedDict
from typing import List, Sequence, Tuple, Union

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from torch import Tensor, nn

from ..backbones.vig import ConvNormAct, vig_init_weights

__all__ = ['ViGPointDecoder']

_ACTS = {'relu': dict(type='ReLU'), 'gelu': dict(type='GELU')}


class ViGPointDecoder(nn.Module):
    """Heatmap decoder ``D_r`` and node-feature branch ``E_f`` of SEL / PCL.

    **Decoder** (spec 2.3). The last block output (B, C, h, w) goes through five upsampling
    stages with widths ``C -> C -> C/2 -> C/4 -> C/8 -> K+1`` (280 -> 280 -> 140 -> 70 -> 35 ->
    K+1 for ViG-S). Each stage is ``ConvTranspose2d(k=2, s=2)`` -> ``conv3x3`` -> norm ->
    activation, except the last, which is ``ConvTranspose2d`` -> ``conv3x3`` (-> norm if
    ``bn_before_softmax``). The result is returned as **logits** (B, K+1, 32h, 32w); the
    reference applied a softmax here, which the losses now do as ``log_softmax``.

    **Decoder taps** (PCL, ``use_decoder_taps=True``). Each of the first four stages also feeds a
    side branch that brings it back to (h, w) and ``C`` channels, every conv followed by norm and
    the decoder activation: stage 1 (2h): conv3x3 s2 p1; stage 2 (4h): conv5x5 s4 p1; stage 3
    (8h): conv3x3 s2 p1 to ``C/2``, then conv5x5 s4 p1; stage 4 (16h): conv5x5 s4 p1 to ``C/4``,
    then conv5x5 s4 p1. ``floor((2n + 2 - 3) / 2) + 1 = n`` and ``floor((4n + 2 - 5) / 4) + 1 = n``
    for every ``n >= 1``, so the taps are exactly (h, w) for any node grid.

    **Feature branch** ``E_f`` (spec 2.4). The ``n`` block outputs (plus the 4 taps with
    ``use_decoder_taps``) are concatenated to ``n*C`` channels and reduced by four 1x1 conv +
    norm + GELU layers ``n*C -> n*C/4 -> n*C/8 -> C -> embed_dims``. The post-GELU output
    (B, embed_dims, h, w) is returned unnormalised, as in the reference.

    Differences from the reference (spec T19): the unused ``prediction`` head (1x1 convs
    ``C -> 1024 -> K+1`` on the backbone output) and SEL's unused ``classification_head`` (a copy
    of the last three decoder stages) are not built, so they neither take memory nor reach the
    optimiser; and the feature branch and side taps are initialised like the rest of the network
    (Kaiming-normal, zero bias; the reference left them at PyTorch's default init because they were
    built after its init call). ``ConvTranspose2d`` layers keep PyTorch's default init, as in the
    reference.

    Args:
        in_channels: channels ``C`` of every block output; divisible by 8.
        num_blocks: number ``n`` of block outputs passed to :meth:`forward`.
        num_classes: foreground classes ``K``; the logits have ``K + 1`` channels (0 = background).
        embed_dims: output channels of the feature branch (70 = 280 // 4 in the papers).
        use_decoder_taps: feed the four decoder side taps into the feature branch (PCL; the SEL
            code does not, though the SEL paper's figure does).
        decoder_act: activation of the decoder stages and taps: ``'relu'`` (reference parity) or
            ``'gelu'`` (what the papers describe), or an mmcv activation config.
        bn_before_softmax: keep the reference's norm layer on the ``K+1`` logits.
        norm_cfg: norm layer config of the whole module.
    """

    num_stages = 5

    def __init__(self,
                 in_channels: int = 280,
                 num_blocks: int = 16,
                 num_classes: int = 1,
                 embed_dims: int = 70,
                 use_decoder_taps: bool = False,
                 decoder_act: Union[str, dict] = 'relu',
                 bn_before_softmax: bool = True,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        if in_channels % 8:
            raise ValueError(f'in_channels must be divisible by 8 (decoder widths C/2, C/4, '
                             f'C/8), got {in_channels}')
        if num_blocks < 1 or num_classes < 1:
            raise ValueError(f'num_blocks and num_classes must be >= 1, got {num_blocks} and '
                             f'{num_classes}')
        if isinstance(decoder_act, str):
            if decoder_act.lower() not in _ACTS:
                raise ValueError(f"decoder_act must be 'relu', 'gelu' or an activation config, "
                                 f'got {decoder_act!r}')
            act_cfg = _ACTS[decoder_act.lower()]
        else:
            act_cfg = dict(decoder_act)
        self.in_channels = in_channels
        self.num_blocks = num_blocks
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.use_decoder_taps = use_decoder_taps
        self.bn_before_softmax = bn_before_softmax

        c = in_channels
        widths = [c, c, c // 2, c // 4, c // 8, num_classes + 1]
        stages = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == self.num_stages - 1
            layers = [('upsample', nn.ConvTranspose2d(cin, cout, 2, stride=2)),
                      ('conv', nn.Conv2d(cout, cout, 3, padding=1))]
            if not last or bn_before_softmax:
                layers.append(('norm', build_norm_layer(norm_cfg, cout)[1]))
            if not last:
                layers.append(('act', build_activation_layer(act_cfg)))
            stages.append(nn.Sequential(OrderedDict(layers)))
        self.decoder = nn.ModuleList(stages)

        num_feats = num_blocks
        if use_decoder_taps:

            def side(cin, cout, kernel, stride):
                return ConvNormAct(cin, cout, kernel, stride=stride, padding=1,
                                   norm_cfg=norm_cfg, act_cfg=act_cfg)

            self.taps = nn.ModuleList([
                side(widths[1], c, 3, 2),
                side(widths[2], c, 5, 4),
                nn.Sequential(side(widths[3], widths[3] * 2, 3, 2), side(widths[3] * 2, c, 5, 4)),
                nn.Sequential(side(widths[4], widths[4] * 2, 5, 4), side(widths[4] * 2, c, 5, 4)),
            ])
            num_feats += len(self.taps)
        else:
            self.taps = None

        gelu = dict(type='GELU')
        total = num_feats * c
        feat_widths = [total, total // 4, total // 8, c, embed_dims]
        self.feat_branch = nn.Sequential(*[
            ConvNormAct(cin, cout, 1, norm_cfg=norm_cfg, act_cfg=gelu)
            for cin, cout in zip(feat_widths[:-1], feat_widths[1:])
        ])
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-normal ``Conv2d`` weights with zero bias everywhere, including the feature
        branch and taps; unit/zero norms; ``ConvTranspose2d`` at PyTorch's default.

        Called at construction and again by a wrapping ``BaseModule``'s ``init_weights``."""
        vig_init_weights(self)

    def decode(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Run the upsampling stages on the last block output (B, C, h, w).

        Returns:
            logits (B, K+1, 32h, 32w) and the outputs of the first four stages.
        """
        stage_feats = []
        for stage in self.decoder:
            x = stage(x)
            stage_feats.append(x)
        return x, stage_feats[:-1]

    def side_taps(self, stage_feats: Sequence[Tensor]) -> List[Tensor]:
        """The four decoder side features, each (B, C, h, w); requires ``use_decoder_taps``."""
        if self.taps is None:
            raise RuntimeError('side_taps() needs use_decoder_taps=True')
        return [tap(feat) for tap, feat in zip(self.taps, stage_feats)]

    def forward(self, block_feats: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """block_feats: ``num_blocks`` tensors (B, C, h, w), the last one feeds the decoder.

        Returns:
            logits (B, K+1, 32h, 32w) and node embeddings (B, embed_dims, h, w).
        """
        block_feats = list(block_feats)
        if len(block_feats) != self.num_blocks:
            raise ValueError(f'ViGPointDecoder expects {self.num_blocks} block outputs, got '
                             f'{len(block_feats)} (check the backbone out_indices)')
        logits, stage_feats = self.decode(block_feats[-1])
        feats = block_feats
        if self.taps is not None:
            feats = feats + self.side_taps(stage_feats)
        embed = self.feat_branch(torch.cat(feats, dim=1))
        return logits, embed

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, num_blocks={self.num_blocks}, '
                f'use_decoder_taps={self.use_decoder_taps}, '
                f'bn_before_softmax={self.bn_before_softmax}')
