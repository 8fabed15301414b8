"""Isotropic Vision GNN (ViG) backbone, in the configuration used by the SEL and PCL papers.

Vision GNN (Han et al., "Vision GNN: An Image is Worth Graph of Nodes", NeurIPS 2022) treats the
patches of a feature map as graph nodes, connects each node to its nearest neighbours in feature
space and mixes them with a graph convolution. SEL (Xu et al., BIBM 2023) and PCL use the isotropic
ViG-S variant at 1024x1024 input with a five-conv stem of total stride 32, i.e. a 32x32 node grid.

This is a re-implementation written from the description in the project's spec
(``specs/pcl_sel.md`` section 2.2); no code of the original implementations is reused.
"""
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, kaiming_init
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    'ConvNormAct', 'dense_dilated_knn', 'max_relative_features', 'interleave_channels',
    'MRConv2d', 'Grapher', 'ConvFFN', 'ViGBlock', 'IsotropicViG', 'vig_init_weights'
]


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (with bias) -> norm layer -> optional activation, as one named sequence.

    Unlike :class:`mmcv.cnn.ConvModule`, the convolution always keeps its bias (the reference
    network has biases in front of every BatchNorm, and the published parameter counts include
    them) and no initialisation is attached; see :func:`vig_init_weights`.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 1,
                 stride: int = 1,
                 padding: int = 0,
                 groups: int = 1,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = None):
        layers = [('conv', nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                     padding=padding, groups=groups, bias=True))]
        if norm_cfg is not None:
            layers.append(('norm', build_norm_layer(norm_cfg, out_channels)[1]))
        if act_cfg is not None:
            layers.append(('act', build_activation_layer(act_cfg)))
        super().__init__(OrderedDict(layers))


def vig_init_weights(module: nn.Module) -> None:
    """The reference initialisation: Kaiming-normal (fan-in, ReLU gain) ``Conv2d`` weights with
    zero bias, and unit/zero norm layers. ``ConvTranspose2d`` layers are left untouched."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            kaiming_init(m, mode='fan_in', nonlinearity='relu', bias=0., distribution='normal')
        elif isinstance(m, (_BatchNorm, nn.GroupNorm, nn.LayerNorm)):
            if getattr(m, 'weight', None) is not None:
                constant_init(m, 1., bias=0.)


@torch.no_grad()
def dense_dilated_knn(x: Tensor, k: int, dilation: int = 1) -> Tensor:
    """Dilated k-nearest neighbours of every node over a dense graph.

    Nodes are compared by squared Euclidean distance between their **L2-normalised** features
    (a monotone function of cosine similarity); no gradient flows through the graph. The
    ``k * dilation`` nearest nodes are found with one batched ``topk`` and every ``dilation``-th
    of them is kept. A node is its own nearest neighbour (distance 0), so it is normally the first
    entry of its list, as in the original ViG; nodes with identical features tie arbitrarily.

    The distance matrix costs O(B * N^2) memory (B=8, N=1024 nodes: 32 MB in float32). It is
    computed in float32 even under autocast so that mixed precision does not reorder neighbours.

    Args:
        x: node features, (B, C, N).
        k: neighbours kept per node.
        dilation: dilation ``d`` of the neighbour list.

    Returns:
        (B, N, k) int64 neighbour indices, nearest first.
    """
    num_nodes = x.shape[-1]
    if k * dilation > num_nodes:
        raise ValueError(f'a dilated kNN graph with k={k} and dilation={dilation} needs at least '
                         f'{k * dilation} nodes, but the feature map has {num_nodes}; use a '
                         'larger input or a smaller k / max_dilation')
    feats = F.normalize(x.detach().float(), p=2.0, dim=1).transpose(1, 2)  # (B, N, C)
    sq_norm = feats.pow(2).sum(-1, keepdim=True)  # (B, N, 1)
    dist = sq_norm - 2 * torch.bmm(feats, feats.transpose(1, 2)) + sq_norm.transpose(1, 2)
    nn_idx = dist.topk(k * dilation, dim=-1, largest=False, sorted=True).indices
    return nn_idx[..., ::dilation].contiguous()


def max_relative_features(x: Tensor, nn_idx: Tensor) -> Tensor:
    """Max-relative aggregation ``x_j(i) = max_{n in N(i)} (x_n - x_i)``, channel-wise.

    Computed as ``max_n x_n - x_i``, which equals the definition exactly (subtracting the same
    value is monotone, also after floating-point rounding) and never materialises the
    (B, C, N, k) differences. Memory of the neighbour gather is O(B * C * N * k).

    Args:
        x: node features, (B, C, N).
        nn_idx: (B, N, k) neighbour indices from :func:`dense_dilated_knn`.

    Returns:
        (B, C, N) aggregated relative features.
    """
    batch, channels, num_nodes = x.shape
    k = nn_idx.shape[-1]
    index = nn_idx.reshape(batch, 1, num_nodes * k).expand(batch, channels, num_nodes * k)
    neighbours = x.gather(2, index).view(batch, channels, num_nodes, k)
    return neighbours.max(dim=-1).values - x


def interleave_channels(a: Tensor, b: Tensor) -> Tensor:
    """Interleave two (B, C, ...) tensors channel by channel: ``[a_0, b_0, a_1, b_1, ...]``.

    This is the layout the original MRConv feeds to its grouped 1x1 convolution; with ``groups=4``
    each group sees a quarter of the channels *together with their relative features*, which a
    plain ``cat([a, b])`` would not give.
    """
    if a.shape != b.shape:
        raise ValueError(f'cannot interleave tensors of shapes {tuple(a.shape)} and '
                         f'{tuple(b.shape)}')
    return torch.stack((a, b), dim=2).flatten(1, 2)


class MRConv2d(nn.Module):
    """Max-relative graph convolution (Li et al., DeepGCNs) on a node map.

    ``[x, max_{n in N(i)}(x_n - x_i)]`` interleaved per channel (2C channels), then a grouped
    1x1 conv + norm + activation.

    Args:
        in_channels: node feature channels ``C``.
        out_channels: output channels (``2C`` in ViG).
        groups: groups of the 1x1 convolution (4 in ViG).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 groups: int = 4,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        if (2 * in_channels) % groups or out_channels % groups:
            raise ValueError(f'MRConv2d: 2 * in_channels={2 * in_channels} and out_channels='
                             f'{out_channels} must be divisible by groups={groups}')
        self.nn = ConvNormAct(2 * in_channels, out_channels, 1, groups=groups, norm_cfg=norm_cfg,
                              act_cfg=act_cfg)

    def forward(self, x: Tensor, nn_idx: Tensor) -> Tensor:
        """x (B, C, H, W), nn_idx (B, H*W, k) -> (B, out_channels, H, W)."""
        batch, channels, height, width = x.shape
        nodes = x.reshape(batch, channels, height * width)
        rel = max_relative_features(nodes, nn_idx)
        out = interleave_channels(nodes, rel).view(batch, 2 * channels, height, width)
        return self.nn(out)


class Grapher(nn.Module):
    """ViG graph module: 1x1 conv + norm -> dilated-kNN MRConv -> 1x1 conv + norm, residual.

    Args:
        channels: node feature channels ``C``.
        k: neighbours per node.
        dilation: dilation of the kNN graph.
        drop_path: stochastic depth rate of the residual branch.
    """

    def __init__(self,
                 channels: int,
                 k: int = 9,
                 dilation: int = 1,
                 drop_path: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        self.k = k
        self.dilation = dilation
        self.fc1 = ConvNormAct(channels, channels, 1, norm_cfg=norm_cfg)
        self.graph_conv = MRConv2d(channels, 2 * channels, groups=4, norm_cfg=norm_cfg,
                                   act_cfg=act_cfg)
        self.fc2 = ConvNormAct(2 * channels, channels, 1, norm_cfg=norm_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.fc1(x)
        nn_idx = dense_dilated_knn(x.flatten(2), self.k, self.dilation)
        x = self.fc2(self.graph_conv(x, nn_idx))
        return shortcut + self.drop_path(x)

    def extra_repr(self) -> str:
        return f'k={self.k}, dilation={self.dilation}'


class ConvFFN(nn.Module):
    """ViG feed-forward module: 1x1 conv C->rC + norm, activation, 1x1 conv rC->C + norm,
    residual."""

    def __init__(self,
                 channels: int,
                 ratio: int = 4,
                 drop_path: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        hidden = channels * ratio
        self.fc1 = ConvNormAct(channels, hidden, 1, norm_cfg=norm_cfg)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = ConvNormAct(hidden, channels, 1, norm_cfg=norm_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.fc2(self.act(self.fc1(x))))


class ViGBlock(nn.Module):
    """One isotropic ViG block: :class:`Grapher` followed by :class:`ConvFFN`."""

    def __init__(self,
                 channels: int,
                 k: int,
                 dilation: int,
                 drop_path: float = 0.,
                 ffn_ratio: int = 4,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        self.grapher = Grapher(channels, k, dilation, drop_path, norm_cfg, act_cfg)
        self.ffn = ConvFFN(channels, ffn_ratio, drop_path, norm_cfg, act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn(self.grapher(x))


@MODELS.register_module()
class IsotropicViG(BaseModule):
    """Isotropic Vision GNN backbone (ViG-S by default), as used by SEL and PCL.

    Stem: five 3x3 stride-2 convs ``in -> C/8 -> C/4 -> C/2 -> C -> C``, each with norm and
    activation (total stride 32, so a 1024x1024 image gives a 32x32 grid of ``N = 1024`` nodes),
    plus a learnable positional embedding. Then ``num_blocks`` blocks, each a :class:`Grapher`
    (dilated dense kNN graph + max-relative graph conv) and a :class:`ConvFFN`, all at ``C``
    channels and stride 32. Block ``i`` uses ``k_i = k + (max_k - k) * i // (num_blocks - 1)``
    neighbours (``int(linspace(k, max_k, num_blocks))``, computed exactly) and dilation
    ``d_i = min(i // 4 + 1, max_dilation)``; for ViG-S that is ``k_i = [9, 9, 10, 10, 11, 12, 12,
    13, 13, 14, 15, 15, 16, 16, 17, 18]`` and ``d_i = [1]*4 + [2]*4 + [3]*4 + [4]*4``.

    Every kNN graph is dense over all nodes: memory grows as O(B * N^2) (the distance matrix) plus
    O(B * C * N * k) (the gathered neighbours), fine for the papers' N = 1024 but quadratic in the
    image area. Use ``with_cp=True`` to trade compute for activation memory.

    Args:
        in_channels: input image channels.
        embed_dims: node feature channels ``C`` (280 for ViG-S); must be divisible by 8.
        num_blocks: number of Grapher+FFN blocks (16 for ViG-S).
        k: neighbours in the first block.
        max_k: neighbours in the last block; ``None`` means ``2 * k``.
        use_dilation: use dilated kNN graphs; if False every block has dilation 1.
        max_dilation: upper bound of the dilation; ``None`` means ``196 // max_k`` (the value
            hard-wired in the reference, derived from a 14x14 grid; 10 for ViG-S, so inactive).
        graph_conv: graph convolution type; only ``'mr'`` (max-relative) is implemented.
        ffn_ratio: hidden expansion of the FFN.
        act_cfg: activation of the stem, graph conv and FFN.
        norm_cfg: norm layer config (``BN``; ``SyncBN`` for multi-GPU training).
        drop_path_rate: stochastic depth rate, increasing linearly from 0 to this over blocks.
        pos_embed_size: (h, w) node grid of the learnable positional embedding (zeros at init).
            It is bilinearly interpolated when the input gives another grid; checkpoints with a
            differently sized embedding are resized the same way on load.
        out_indices: blocks whose outputs are returned; ``None`` means all blocks (the SEL/PCL
            feature branch concatenates all of them). Negative indices count from the end.
        frozen_stages: freeze the stem and positional embedding (``0``) and additionally the
            first ``frozen_stages`` blocks (``>= 1``); ``-1`` freezes nothing.
        norm_eval: keep norm layers in eval mode (frozen running statistics) during training.
        with_cp: use gradient checkpointing in each block.
        init_cfg: ``None`` gives the reference initialisation (Kaiming-normal conv weights, zero
            biases, zero positional embedding; random, there are no public ViG-S weights for this
            setting). To start from a local checkpoint use e.g.
            ``dict(type='Pretrained', checkpoint='path/to/local.pth', prefix='backbone.')``.

    Example:
        >>> import torch
        >>> model = IsotropicViG(embed_dims=32, num_blocks=2, k=4)
        >>> outs = model(torch.rand(1, 3, 128, 128))
        >>> [tuple(o.shape) for o in outs]
        [(1, 32, 4, 4), (1, 32, 4, 4)]
    """

    stride = 32

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 280,
                 num_blocks: int = 16,
                 k: int = 9,
                 max_k: Optional[int] = None,
                 use_dilation: bool = True,
                 max_dilation: Optional[int] = None,
                 graph_conv: str = 'mr',
                 ffn_ratio: int = 4,
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='BN'),
                 drop_path_rate: float = 0.,
                 pos_embed_size: Sequence[int] = (32, 32),
                 out_indices: Optional[Union[int, Sequence[int]]] = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        if graph_conv != 'mr':
            raise NotImplementedError(f"graph_conv={graph_conv!r}: only 'mr' (max-relative, the "
                                      'one SEL/PCL use) is implemented')
        if embed_dims % 8:
            raise ValueError(f'embed_dims must be divisible by 8 (stem widths C/8, C/4, C/2), '
                             f'got {embed_dims}')
        if num_blocks < 1 or k < 1:
            raise ValueError(f'num_blocks and k must be >= 1, got {num_blocks} and {k}')
        max_k = 2 * k if max_k is None else max_k
        if max_k < k:
            raise ValueError(f'max_k={max_k} must be >= k={k}')
        if max_dilation is None:
            max_dilation = max(196 // max_k, 1)
        self.embed_dims = embed_dims
        self.num_blocks = num_blocks
        self.knn_sizes = [
            k + ((max_k - k) * i) // (num_blocks - 1) if num_blocks > 1 else k
            for i in range(num_blocks)
        ]
        self.dilations = [
            min(i // 4 + 1, max_dilation) if use_dilation else 1 for i in range(num_blocks)
        ]

        if out_indices is None:
            out_indices = tuple(range(num_blocks))
        elif isinstance(out_indices, int):
            out_indices = (out_indices, )
        normalised = []
        for index in out_indices:
            if not -num_blocks <= index < num_blocks:
                raise IndexError(f'out_indices entry {index} is out of range for {num_blocks} '
                                 'blocks')
            normalised.append(index % num_blocks)
        self.out_indices = tuple(normalised)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        widths = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims,
                  embed_dims]
        self.stem = nn.Sequential(*[
            ConvNormAct(cin, cout, 3, stride=2, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg)
            for cin, cout in zip(widths[:-1], widths[1:])
        ])
        self.pos_embed_size = tuple(int(s) for s in pos_embed_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dims, *self.pos_embed_size))

        dpr = torch.linspace(0, drop_path_rate, num_blocks).tolist()
        self.blocks = nn.ModuleList(
            ViGBlock(embed_dims, self.knn_sizes[i], self.dilations[i], dpr[i], ffn_ratio,
                     norm_cfg, act_cfg) for i in range(num_blocks))
        self._freeze_stages()

    # ----------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """Reference initialisation when ``init_cfg`` is None, else mmengine's ``init_cfg``."""
        if self.init_cfg is not None:
            super().init_weights()
            return
        vig_init_weights(self)
        nn.init.zeros_(self.pos_embed)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + 'pos_embed'
        if key in state_dict:
            pos = state_dict[key]
            if pos.dim() == 4 and pos.shape[:2] == self.pos_embed.shape[:2] and \
                    pos.shape[2:] != self.pos_embed.shape[2:]:
                state_dict[key] = F.interpolate(pos.float(), size=self.pos_embed_size,
                                                mode='bilinear',
                                                align_corners=False).to(pos.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ----------------------------------------------------------------- forward
    def interpolate_pos_embed(self, grid_hw: Tuple[int, int]) -> Tensor:
        """The positional embedding for a ``grid_hw`` node grid, (1, C, h, w)."""
        if tuple(grid_hw) == self.pos_embed_size:
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=tuple(grid_hw), mode='bilinear',
                             align_corners=False)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """x (B, in_channels, H, W) with H, W multiples of 32 -> the selected block outputs,
        each (B, C, H/32, W/32)."""
        height, width = x.shape[-2:]
        if height % self.stride or width % self.stride:
            raise ValueError(f'IsotropicViG needs an input whose height and width are multiples '
                             f'of {self.stride} (the stem halves them five times), got '
                             f'{height}x{width}; pad it, e.g. with pad_size_divisor=32 in the '
                             'data preprocessor')
        x = self.stem(x)
        x = x + self.interpolate_pos_embed(x.shape[-2:])
        outs = []
        for i, block in enumerate(self.blocks):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    # ----------------------------------------------------------------- training
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        modules = [self.stem] + list(self.blocks[:self.frozen_stages])
        self.pos_embed.requires_grad = False
        for module in modules:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'IsotropicViG':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, num_blocks={self.num_blocks}, '
                f'knn_sizes={self.knn_sizes}, dilations={self.dilations}, '
                f'out_indices={self.out_indices}')

