"""Point detector: backbone (+ neck) + heatmap point head, with sliding-window inference."""
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmdet.models.detectors import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.structures import InstanceData, PixelData
from torch import Tensor

from protocal.structures import unscale_points
from protocal.utils import release_freed_memory


__all__ = ['PointDetector', 'tile_starts', 'owned_ranges']


def tile_starts(length: int, crop: int, stride: int) -> List[int]:
    """Start offsets of tiles of size ``crop`` every ``stride`` pixels covering ``[0, length)``.

    The last tile is aligned to the end, so every tile lies inside the image when
    ``length >= crop``; a shorter side gets one tile (the whole side).
    """
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    starts.append(length - crop)
    return sorted(set(starts))


def owned_ranges(starts: Sequence[int], crop: int, length: int) -> List[Tuple[float, float]]:
    """The part ``[lo, hi)`` of the axis each tile is responsible for.

    Boundaries lie half-way between consecutive tile centres, so each pixel belongs to exactly one
    tile, the one whose centre is nearest: a peak is reported by the tile that saw it with the most
    context around it, and never twice.
    """
    centres = [s + min(crop, length) / 2 for s in starts]
    bounds = [(a + b) / 2 for a, b in zip(centres[:-1], centres[1:])]
    los = [float('-inf')] + bounds
    his = bounds + [float('inf')]
    return list(zip(los, his))


@MODELS.register_module()
class PointDetector(BaseDetector):
    """Cell (point) detector on MMDetection: any backbone/neck + a heatmap point head.

    ``test_cfg``:

    * ``mode='whole'`` (default): the whole (padded) image in one pass.
    * ``mode='slide'``: tiles of ``crop_size`` (h, w) every ``stride`` (h, w) pixels, processed in
      groups of ``tiles_per_batch``; each tile is decoded on its own and keeps only the peaks in the
      part of the image it owns (nearest tile centre), then peaks of the same class closer than
      the codec's ``min_distance`` across tile boundaries are de-duplicated (highest score wins).
      Only tile-sized probability maps are ever held, so memory does not grow with the image
      beyond its input tensor and the output points. The overlap (crop - stride) should be at least
      ``2 * (min_distance + exclude_border)`` so that every owned pixel's peak window lies inside
      its tile; a smaller overlap triggers a warning.
    * ``return_heatmap=True``: attach the probability map as ``pred_heatmap`` (whole mode only).
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 neck: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        head = dict(head)
        head.update(train_cfg=train_cfg, test_cfg=test_cfg)
        self.head = MODELS.build(head)
        self.train_cfg = train_cfg or {}
        self.test_cfg = test_cfg or {}
        mode = self.test_cfg.get('mode', 'whole')
        if mode not in ('whole', 'slide'):
            raise ValueError(f"test_cfg.mode must be 'whole' or 'slide', got {mode!r}")

    def extract_feat(self, inputs: Tensor) -> Tuple[Tensor]:
        feats = self.backbone(inputs)
        if self.neck is not None:
            feats = self.neck(feats)
        return tuple(feats)

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        return self.head.loss(self.extract_feat(inputs), data_samples)

    def _forward(self, inputs: Tensor, data_samples: Optional[SampleList] = None):
        return self.head(self.extract_feat(inputs))

    def predict(self, inputs: Tensor, data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        if self.test_cfg.get('mode', 'whole') == 'slide':
            results = [
                self.slide_predict(inputs[i:i + 1], sample, rescale)
                for i, sample in enumerate(data_samples)
            ]
            heatmaps = [None] * len(results)
        else:
            logits, _ = self.head(self.extract_feat(inputs))
            results, heatmaps = self.head.predict_by_feat(logits, data_samples, rescale=rescale)
        for sample, result, heatmap in zip(data_samples, results, heatmaps):
            sample.pred_instances = result
            if heatmap is not None:
                sample.pred_heatmap = PixelData(data=heatmap)
        return data_samples

    # ------------------------------------------------------------ sliding window
    def slide_predict(self, inputs: Tensor, data_sample, rescale: bool = True) -> InstanceData:
        """Sliding-window inference on one image (``inputs`` is (1, C, H, W))."""
        cfg = self.test_cfg
        crop_h, crop_w = _pair(cfg.get('crop_size', (512, 512)))
        stride_h, stride_w = _pair(cfg.get('stride', (crop_h * 3 // 4, crop_w * 3 // 4)))
        codec = self.head.codec
        margin = 2 * (codec.min_distance + codec.exclude_border)
        if min(crop_h - stride_h, crop_w - stride_w) < margin:
            warnings.warn(f'sliding-window overlap {(crop_h - stride_h, crop_w - stride_w)} is '
                          f'smaller than 2 * (min_distance + exclude_border) = {margin}; peaks '
                          'near tile boundaries may be missed')
        height, width = data_sample.metainfo.get('img_shape', inputs.shape[-2:])[:2]
        ys, xs = tile_starts(height, crop_h, stride_h), tile_starts(width, crop_w, stride_w)
        own_y, own_x = owned_ranges(ys, crop_h, height), owned_ranges(xs, crop_w, width)
        tiles = [(y0, x0, oy, ox) for y0, oy in zip(ys, own_y) for x0, ox in zip(xs, own_x)]
        divisor = getattr(self.data_preprocessor, 'pad_size_divisor', 1) or 1
        per_batch = max(1, int(cfg.get('tiles_per_batch', 4)))
        found = []
        for i in range(0, len(tiles), per_batch):
            group = tiles[i:i + per_batch]
            crops = [
                inputs[0, :, y0:min(y0 + crop_h, height), x0:min(x0 + crop_w, width)]
                for y0, x0, _, _ in group
            ]
            batch = _pad_stack(crops, divisor)
            logits, _ = self.head(self.extract_feat(batch))
            probs = logits.float().softmax(1)
            for (y0, x0, (ylo, yhi), (xlo, xhi)), crop, prob in zip(group, crops, probs):
                det = codec.decode(prob[:, :crop.shape[-2], :crop.shape[-1]])
                pts = det['points'] + det['points'].new_tensor([x0, y0])
                keep = ((pts[:, 0] >= xlo) & (pts[:, 0] < xhi) & (pts[:, 1] >= ylo) &
                        (pts[:, 1] < yhi))
                found.append((pts[keep], det['labels'][keep], det['scores'][keep]))
            del batch, logits, probs
            release_freed_memory()  # keeps the resident size flat over many tiles
        points = torch.cat([f[0] for f in found]).float()
        labels = torch.cat([f[1] for f in found]).long()
        scores = torch.cat([f[2] for f in found]).float()
        keep = codec.suppress_duplicates(points, labels, scores)
        result = InstanceData()
        points, labels, scores = points[keep], labels[keep], scores[keep]
        order = torch.argsort(scores, descending=True)
        points = points[order]
        if rescale and 'scale_factor' in data_sample.metainfo:
            points = unscale_points(points, data_sample.metainfo['scale_factor'])
        result.points, result.labels, result.scores = points, labels[order], scores[order]
        return result


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def _pad_stack(crops: List[Tensor], divisor: int) -> Tensor:
    """Stack (C, h, w) crops into a batch zero-padded to a common size divisible by ``divisor``."""
    height = max(c.shape[-2] for c in crops)
    width = max(c.shape[-1] for c in crops)
    height = -(-height // divisor) * divisor
    width = -(-width // divisor) * divisor
    batch = crops[0].new_zeros(len(crops), crops[0].shape[0], height, width)
    for i, crop in enumerate(crops):
        batch[i, :, :crop.shape[-2], :crop.shape[-1]] = crop
    return batch
