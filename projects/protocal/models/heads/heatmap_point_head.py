"""Heatmap point head: per-pixel class probabilities + a node embedding map."""
import inspect
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures import SampleList
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from protocal.prototypes import node_masks_from_points
from protocal.structures import unscale_points

__all__ = ['BaseHeatmapPointHead', 'HeatmapPointHead']


def _build_heatmap_loss(cfg: dict, num_classes: int, embed_dims: int) -> nn.Module:
    """Build a heatmap loss, filling ``num_classes``/``embed_dims`` when the loss takes them."""
    cfg = dict(cfg)
    loss_cls = MODELS.get(cfg['type']) if isinstance(cfg['type'], str) else cfg['type']
    if loss_cls is None:
        raise KeyError(f"heatmap loss {cfg['type']!r} is not registered in mmdet's MODELS "
                       "(did the config import protocal via custom_imports?)")
    params = inspect.signature(loss_cls.__init__).parameters
    if 'num_classes' in params:
        cfg.setdefault('num_classes', num_classes)
    if 'embed_dims' in params:
        cfg.setdefault('embed_dims', embed_dims)
    return MODELS.build(cfg)


class BaseHeatmapPointHead(BaseModule):
    """Everything a heatmap point head does except turning features into (logits, embed).

    Subclasses implement :meth:`forward` returning ``(logits, embed)``:
    ``logits`` (B, K+1, H, W) at input resolution (channel 0 = background) and ``embed``
    (B, D, h, w), the node features used by calibrated losses. This base class encodes the
    annotated points into targets with the codec (the only place that knows heatmap geometry),
    builds the node masks, calls the loss and decodes predictions.

    Args:
        num_classes: foreground classes ``K``.
        embed_dims: node feature dimension ``D``.
        codec: :class:`protocal.codecs.PointHeatmapCodec` config; its ``num_classes`` is filled in.
        loss_heatmap: heatmap loss config (e.g. ``SoftCrossEntropyLoss``, ``SemanticEnergyLoss``,
            ``PrototypeCalibratedLoss``).
        train_cfg / test_cfg: unused by the base head beyond ``test_cfg.return_heatmap``.
    """

    def __init__(self,
                 num_classes: int,
                 embed_dims: int = 70,
                 codec: dict = dict(type='PointHeatmapCodec', radius=15),
                 loss_heatmap: dict = dict(type='SoftCrossEntropyLoss'),
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1 (foreground classes), got {num_classes}')
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        codec = dict(codec)
        codec.setdefault('num_classes', num_classes)
        if codec['num_classes'] != num_classes:
            raise ValueError(f"codec num_classes={codec['num_classes']} differs from the head's "
                             f'num_classes={num_classes}')
        self.codec = TASK_UTILS.build(codec)
        self.loss_heatmap = _build_heatmap_loss(loss_heatmap, num_classes, embed_dims)
        # calibrated losses (SEL, PCL) read the node embeddings; the plain loss does not
        self.loss_uses_embeddings = bool(getattr(self.loss_heatmap, 'uses_embeddings', True))
        self.train_cfg = train_cfg or {}
        self.test_cfg = test_cfg or {}

    # ------------------------------------------------------------------ training
    def loss(self, feats: Tuple[Tensor], batch_data_samples: SampleList) -> Dict[str, Tensor]:
        logits, embed = self(feats)
        return self.loss_by_feat(logits, embed, batch_data_samples)

    def loss_by_feat(self, logits: Tensor, embed: Tensor,
                     batch_data_samples: SampleList) -> Dict[str, Tensor]:
        height, width = logits.shape[-2:]
        points, labels = self.annotated_points(batch_data_samples, logits.device)
        target = self.codec.encode_batch(points, labels, (height, width)).to(logits.device)
        node_masks = None
        if embed is not None:
            grid_hw = tuple(embed.shape[-2:])
            stride = height / grid_hw[0]
            node_masks = node_masks_from_points(points, labels, self.num_classes, stride,
                                                grid_hw, device=logits.device)
        elif self.loss_uses_embeddings:
            raise ValueError(f'{type(self.loss_heatmap).__name__} needs node embeddings but '
                             f'{type(self).__name__} produced none')
        valid = self.valid_mask(batch_data_samples, (height, width), logits.device)
        return self.loss_heatmap(logits, target, embed=embed, node_masks=node_masks,
                                 valid_mask=valid)

    @staticmethod
    def annotated_points(batch_data_samples: SampleList,
                         device) -> Tuple[List[Tensor], List[Tensor]]:
        """The sparse (annotated) ground-truth points and labels of each sample."""
        points, labels = [], []
        for sample in batch_data_samples:
            gt = sample.gt_instances
            keep = gt.annotated.bool() if 'annotated' in gt else torch.ones(
                len(gt), dtype=torch.bool, device=gt.points.device)
            points.append(gt.points[keep].to(device).float())
            labels.append(gt.labels[keep].to(device).long())
        return points, labels

    @staticmethod
    def valid_mask(batch_data_samples: SampleList, shape: Tuple[int, int],
                   device) -> Optional[Tensor]:
        """(B, 1, H, W) bool, False on the padding the data preprocessor added; None if none."""
        height, width = shape
        sizes = [s.metainfo.get('img_shape', shape)[:2] for s in batch_data_samples]
        if all(h >= height and w >= width for h, w in sizes):
            return None
        mask = torch.zeros(len(sizes), 1, height, width, dtype=torch.bool, device=device)
        for i, (h, w) in enumerate(sizes):
            mask[i, :, :h, :w] = True
        return mask

    # ----------------------------------------------------------------- inference
    def predict(self, feats: Tuple[Tensor], batch_data_samples: SampleList,
                rescale: bool = True) -> List[InstanceData]:
        logits, _ = self(feats)
        return self.predict_by_feat(logits, batch_data_samples, rescale=rescale)[0]

    def predict_by_feat(
            self,
            logits: Tensor,
            batch_data_samples: SampleList,
            rescale: bool = True) -> Tuple[List[InstanceData], List[Optional[Tensor]]]:
        """Decode logits into points.

        Returns:
            results: one ``InstanceData`` (points, labels, scores) per image, points in the
                original image when ``rescale`` (``scale_factor`` of the metainfo undone).
            heatmaps: (K+1, H, W) probability maps (original size when ``rescale``) if
                ``test_cfg.return_heatmap``, else ``None`` per image.
        """
        probs = logits.float().softmax(1)
        results, heatmaps = [], []
        for prob, sample in zip(probs, batch_data_samples):
            meta = sample.metainfo
            h, w = meta.get('img_shape', prob.shape[-2:])[:2]
            prob = prob[:, :h, :w]  # drop the padding added by the data preprocessor
            det = self.codec.decode(prob)
            result = InstanceData()
            points = det['points'].float()
            if rescale and 'scale_factor' in meta:
                points = unscale_points(points, meta['scale_factor'])
            result.points = points
            result.labels = det['labels'].long()
            result.scores = det['scores'].float()
            results.append(result)
            heatmap = None
            if self.test_cfg.get('return_heatmap', False):
                heatmap = prob
                if rescale and 'ori_shape' in meta and tuple(meta['ori_shape'][:2]) != (h, w):
                    heatmap = F.interpolate(prob[None], size=tuple(meta['ori_shape'][:2]),
                                            mode='bilinear', align_corners=False)[0]
                heatmap = heatmap.cpu()
            heatmaps.append(heatmap)
        return results, heatmaps


@MODELS.register_module()
class HeatmapPointHead(BaseHeatmapPointHead):
    """Heatmap point head for any multi-scale backbone/neck.

    Decoder: every selected level is projected to ``channels`` by a 1x1 conv, upsampled to the
    finest selected level and summed (an FPN-style fusion), refined by ``num_convs`` 3x3 convs,
    then brought to the input resolution by ``2x`` upsampling steps (bilinear + 3x3 conv) with the
    widths in ``upsample_channels``; any stride left is covered by bilinear upsampling of the
    logits. Embeddings: the level ``embed_index`` goes through two 1x1 convs (BN + GELU) to
    ``embed_dims`` channels (post-GELU, like the reference feature branch). The branch is only
    built when the loss reads embeddings (otherwise ``forward`` returns ``embed=None``), so a
    plain-loss detector has no parameter without gradient and trains under DDP as is.

    Args:
        in_channels: channels of each input level (int: the same for all).
        in_index: indices of the levels used by the decoder.
        channels: decoder width.
        num_convs: 3x3 convs after the fusion.
        upsample_channels: widths of the 2x upsampling steps towards full resolution.
        embed_index: index of the level the embeddings are computed from (its stride is the
            node size, e.g. the last level of a stride-32 backbone gives the papers' 32 px nodes).
        embed_hidden: hidden width of the embedding branch.
        input_stride: stride (input pixels per feature pixel) of the finest selected level; the
            logits are produced at ``finest_size * input_stride`` (4 for ResNet+FPN level 0).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: Union[int, Sequence[int]],
                 in_index: Sequence[int] = (0, 1, 2, 3),
                 channels: int = 64,
                 num_convs: int = 1,
                 upsample_channels: Sequence[int] = (32, 16),
                 embed_index: int = -1,
                 embed_dims: int = 70,
                 embed_hidden: int = 128,
                 input_stride: int = 4,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 init_cfg: Optional[Union[dict, List[dict]]] = dict(
                     type='Kaiming', layer='Conv2d', nonlinearity='relu'),
                 **kwargs):
        super().__init__(num_classes=num_classes, embed_dims=embed_dims, init_cfg=init_cfg,
                         **kwargs)
        self.in_index = tuple(in_index)
        if isinstance(in_channels, int):
            in_channels = [in_channels] * (max(max(self.in_index), embed_index) + 1)
        self.in_channels = list(in_channels)
        self.embed_index = embed_index
        self.input_stride = input_stride
        self.lateral = nn.ModuleList(
            ConvModule(self.in_channels[i], channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
            for i in self.in_index)
        self.fuse = nn.Sequential(*[
            ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg)
            for _ in range(num_convs)
        ])
        ups, width = [], channels
        for out in upsample_channels:
            ups.append(ConvModule(width, out, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg))
            width = out
        self.upsample = nn.ModuleList(ups)
        self.classifier = nn.Conv2d(width, num_classes + 1, 1)
        gelu = dict(type='GELU')
        self.embed = None
        if self.loss_uses_embeddings:
            self.embed = nn.Sequential(
                ConvModule(self.in_channels[embed_index], embed_hidden, 1, norm_cfg=norm_cfg,
                           act_cfg=gelu),
                ConvModule(embed_hidden, embed_dims, 1, norm_cfg=norm_cfg, act_cfg=gelu))

    def forward(self, feats: Tuple[Tensor]) -> Tuple[Tensor, Tensor]:
        feats = tuple(feats)
        if len(feats) <= max(max(self.in_index), self.embed_index % len(feats)):
            raise ValueError(f'HeatmapPointHead got {len(feats)} feature levels but in_index='
                             f'{self.in_index}, embed_index={self.embed_index}')
        levels = [lat(feats[i]) for lat, i in zip(self.lateral, self.in_index)]
        size = max((lv.shape[-2:] for lv in levels), key=lambda s: s[0] * s[1])
        fused = sum(
            lv if lv.shape[-2:] == size else F.interpolate(
                lv, size=size, mode='bilinear', align_corners=False) for lv in levels)
        x = self.fuse(fused)
        for conv in self.upsample:
            x = conv(F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False))
        logits = self.classifier(x)
        out_hw = (size[0] * self.input_stride, size[1] * self.input_stride)
        if logits.shape[-2:] != out_hw:
            logits = F.interpolate(logits, size=out_hw, mode='bilinear', align_corners=False)
        embed = self.embed(feats[self.embed_index]) if self.embed is not None else None
        return logits, embed
