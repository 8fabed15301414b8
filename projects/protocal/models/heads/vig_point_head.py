"""The SEL / PCL heatmap head on :class:`~protocal.models.backbones.IsotropicViG` block outputs."""
from typing import List, Optional, Sequence, Tuple, Union

from mmdet.registry import MODELS
from torch import Tensor

from .heatmap_point_head import BaseHeatmapPointHead
from .vig_decoder import ViGPointDecoder

__all__ = ['ViGHeatmapPointHead']


@MODELS.register_module()
class ViGHeatmapPointHead(BaseHeatmapPointHead):
    """Heatmap point head of the SEL / PCL papers (decoder ``D_r`` + node branch ``E_f``).

    Consumes all block outputs of an isotropic ViG (each (B, C, h, w) at stride 32) and returns
    logits at input resolution plus (B, ``embed_dims``, h, w) node embeddings, so one node is a
    32x32 pixel cell as in the papers. Targets, losses and decoding come from
    :class:`BaseHeatmapPointHead`; the network is :class:`ViGPointDecoder`.

    Args:
        num_classes: foreground classes ``K``.
        in_channels: channels of every block output (280 for ViG-S).
        num_blocks: number of block outputs the backbone returns (16 for ViG-S).
        embed_dims: node feature dimension (70 in the papers).
        use_decoder_taps: PCL's decoder side taps in the node branch (SEL: False).
        decoder_act: ``'relu'`` (reference code) or ``'gelu'`` (papers' text).
        bn_before_softmax: keep the reference's BN on the logits.
        norm_cfg: norm layer config.
        **kwargs: ``codec``, ``loss_heatmap``, ``train_cfg``, ``test_cfg`` of the base head.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int = 280,
                 num_blocks: int = 16,
                 embed_dims: int = 70,
                 use_decoder_taps: bool = False,
                 decoder_act: Union[str, dict] = 'relu',
                 bn_before_softmax: bool = True,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 **kwargs):
        super().__init__(num_classes=num_classes, embed_dims=embed_dims, init_cfg=init_cfg,
                         **kwargs)
        self.decoder = ViGPointDecoder(
            in_channels=in_channels,
            num_blocks=num_blocks,
            num_classes=num_classes,
            embed_dims=embed_dims,
            use_decoder_taps=use_decoder_taps,
            decoder_act=decoder_act,
            bn_before_softmax=bn_before_softmax,
            norm_cfg=norm_cfg)

    def init_weights(self) -> None:
        super().init_weights()
        if self.init_cfg is None:
            self.decoder.init_weights()

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        return self.decoder(feats)
