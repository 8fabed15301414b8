"""Segmentor trained from sparse label maps (points / scribbles / blocks): ProCNS and baselines.

An mmseg :class:`~mmseg.models.EncoderDecoder` (so any mmseg backbone / neck / decode head and the
stock inference, slide mode and visualisation work) whose ``loss`` replaces the decode head's dense
loss with a list of sparse-label losses (``ProCNSLoss``, ``PartialCELoss`` + a WSL4MIS regulariser).

Training batch flow (spec 4.7): sparse label ``gt_sem_seg`` -> stored pseudo-label / EMA window of
the crop (from :class:`PseudoLabelStore`) -> joint random rot90/flip + rotation of image, sparse
label, pseudo-label, EMA map and validity mask **inside the model process** (so the per-image state
never has to travel through data-loader workers) -> backbone / head -> losses. The training stage
(1 = warm-up, 2 = pseudo-label stage) is set each iteration by
:class:`~protocal.engine.hooks.PseudoLabelHook`.
"""
import math
import zlib
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.dist import get_rank
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS, TASK_UTILS
from torch import Tensor, nn

from protocal.models.losses.procns import segmentation_dice_counts

__all__ = ['SparseLabelSegmentor', 'joint_rot_flip', 'joint_rotate']


def joint_rot_flip(tensors: Sequence[Optional[Tensor]], k: int, flip_dim: int
                   ) -> List[Optional[Tensor]]:
    """Rotate (B, ..., H, W) tensors by ``k`` quarter turns, then flip along ``flip_dim``
    (-1/-2)."""
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        t = torch.rot90(t, k, dims=(-2, -1)) if k else t
        out.append(torch.flip(t, dims=(flip_dim,)))
    return out


def _rotation_grid(angles_deg: Tensor, size, device) -> Tensor:
    rad = angles_deg.to(device=device, dtype=torch.float32) * math.pi / 180
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    height, width = size
    # rotation about the image centre in pixel units (normalised coords scale x and y differently)
    theta = torch.stack([
        torch.stack([cos, -sin * height / width, zero], dim=1),
        torch.stack([sin * width / height, cos, zero], dim=1)
    ], dim=1)
    return F.affine_grid(theta, (angles_deg.shape[0], 1, height, width), align_corners=False)


def joint_rotate(image: Tensor, maps: Dict[str, Optional[Tensor]], valid: Tensor,
                 angles_deg: Tensor, image_mode: str = 'bilinear') -> tuple:
    """Rotate images and label maps of a batch by per-image angles (0 = unchanged).

    Label maps (integer) use nearest sampling; soft maps (float, 4-D) bilinear; pixels that come
    from
    outside the image become invalid (``valid`` False), so no loss reads the fill value.

    Args:
        image: (B, C, H, W) network input.
        maps: name -> (B, H, W) integer or (B, C, H, W) float map (or None).
        valid: (B, H, W) bool.
        angles_deg: (B,) angles.
    """
    grid = _rotation_grid(angles_deg, image.shape[-2:], image.device)
    image = F.grid_sample(image, grid.to(image.dtype), mode=image_mode, padding_mode='zeros',
                          align_corners=False)
    new_valid = F.grid_sample(valid[:, None].float(), grid, mode='nearest', padding_mode='zeros',
                              align_corners=False)[:, 0] > 0.5
    out = {}
    for name, value in maps.items():
        if value is None:
            out[name] = None
        elif value.dim() == 3:
            rot = F.grid_sample(value[:, None].float(), grid, mode='nearest',
                                padding_mode='zeros', align_corners=False)[:, 0]
            out[name] = rot.round().long()
        else:
            out[name] = F.grid_sample(value.float(), grid, mode='bilinear', padding_mode='zeros',
                                      align_corners=False)
    return image, out, new_valid


@MODELS.register_module()
class SparseLabelSegmentor(EncoderDecoder):
    """Encoder-decoder segmentor with sparse-label losses, joint in-model augmentation and a
    pseudo-label store.

    Args:
        backbone, decode_head, neck, auxiliary_head, train_cfg, test_cfg, data_preprocessor,
            init_cfg: as :class:`mmseg.models.EncoderDecoder` (the decode head's own
            ``loss_decode`` is not used in training).
        losses: loss config(s) called as ``loss(logits, sparse=, image=, feats=, valid=, pseudo=,
            ema=, stage=)``, each returning a dict of weighted terms.
        feature_indices: indices into the backbone (neck) outputs of the PRSA feature maps
            (PyMICUNet: ``(3, 7)`` = encoder level 4 and decoder block 3).
        train_augment: joint augmentation (spec 3.4): ``rot_flip_prob`` (0.5; ``k`` quarter turns
            -- only 0/2 for non-square crops -- then one random flip), ``rotate_prob`` (0.5),
            ``max_angle`` (45: integer angle in [-45, 44]), ``image_mode`` ('bilinear'; the
            reference used 'nearest' for the image too). ``None`` disables it.
        pseudo_label_store: config of the :class:`PseudoLabelStore` (``num_classes`` and
            ``ignore_index`` are filled in).
        augment_seed: seed of the augmentation generator (mixed with the iteration and rank).
        ignore_index: unlabelled value of the sparse label maps.
        record_curve: record per-iteration Dice(pred, pseudo-label) counts in stage 2 (ANPM).
    """

    def __init__(self,
                 backbone: dict,
                 decode_head: dict,
                 losses: Union[dict, List[dict]],
                 neck: Optional[dict] = None,
                 auxiliary_head: Optional[dict] = None,
                 feature_indices: Sequence[int] = (),
                 train_augment: Optional[dict] = dict(
                     rot_flip_prob=0.5, rotate_prob=0.5, max_angle=45, image_mode='bilinear'),
                 pseudo_label_store: Optional[dict] = dict(type='PseudoLabelStore'),
                 augment_seed: int = 0,
                 ignore_index: int = 255,
                 record_curve: bool = True,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            backbone=backbone, decode_head=decode_head, neck=neck, auxiliary_head=auxiliary_head,
            train_cfg=train_cfg, test_cfg=test_cfg, data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        if auxiliary_head is not None:
            raise ValueError('SparseLabelSegmentor does not support auxiliary heads (their dense '
                             'losses would need full masks)')
        losses = losses if isinstance(losses, (list, tuple)) else [losses]
        if not losses:
            raise ValueError('SparseLabelSegmentor needs at least one loss')
        self.sparse_losses = nn.ModuleList(MODELS.build(cfg) for cfg in losses)
        self.feature_indices = tuple(feature_indices)
        self.train_augment = dict(train_augment) if train_augment else None
        self.augment_seed = int(augment_seed)
        self.ignore_index = ignore_index
        self.record_curve = record_curve
        self.store = None
        if pseudo_label_store is not None:
            store_cfg = dict(pseudo_label_store)
            store_cfg.setdefault('num_classes', self.num_classes)
            store_cfg.setdefault('ignore_index', ignore_index)
            self.store = TASK_UTILS.build(store_cfg)
        self.train_iter = 0
        self.stage = 1
        self._progress_from_hook = False
        self.last_counts = None

    # ---------------------------------------------------------------- schedule (set by the hook)
    def set_train_progress(self, iteration: int, stage: int) -> None:
        """Called by :class:`PseudoLabelHook` before every training iteration."""
        self.train_iter = int(iteration)
        self.stage = int(stage)
        self._progress_from_hook = True

    # ---------------------------------------------------------------- helpers
    def raw_image(self, inputs: Tensor) -> Tensor:
        """Undo the data preprocessor's normalisation: image in [0, 1] for the local kernel."""
        pre = self.data_preprocessor
        mean = getattr(pre, 'mean', None)
        std = getattr(pre, 'std', None)
        image = inputs.detach().float()
        if getattr(pre, '_enable_normalize', False) and mean is not None and std is not None:
            image = image * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
        return image / 255.0

    def forward_logits(self, inputs: Tensor):
        """Backbone features and logits up-sampled to the input size."""
        feats = self.extract_feat(inputs)
        logits = self.decode_head.forward(feats)
        if logits.shape[-2:] != inputs.shape[-2:]:
            logits = F.interpolate(logits, size=inputs.shape[-2:], mode='bilinear',
                                   align_corners=self.align_corners)
        return feats, logits

    @torch.no_grad()
    def predict_probs(self, inputs: Tensor, batch_img_metas: List[dict]) -> List[Tensor]:
        """Softmax of the whole (un-augmented) images, cropped to each ``img_shape``, on CPU."""
        _, logits = self.forward_logits(inputs)
        probs = logits.float().softmax(1)
        out = []
        for prob, meta in zip(probs, batch_img_metas):
            height, width = meta['img_shape'][:2]
            out.append(prob[:, :height, :width].cpu())
        return out

    def _generator(self) -> torch.Generator:
        seed = zlib.crc32(f'{self.augment_seed}:{self.train_iter}:{get_rank()}'.encode())
        return torch.Generator().manual_seed(seed)

    def _augment(self, inputs, image, maps, valid):
        cfg = self.train_augment
        gen = self._generator()
        batch = inputs.shape[0]
        square = inputs.shape[-1] == inputs.shape[-2]
        if cfg.get('rot_flip_prob', 0) > 0:
            outs = {name: [] for name in ['inputs', 'image', 'valid', *maps]}
            for b in range(batch):  # per image (a handful), never per pixel
                draw = torch.rand(1, generator=gen).item()
                k = int(torch.randint(0, 4, (1,), generator=gen))
                flip = -1 - int(torch.randint(0, 2, (1,), generator=gen))
                items = dict(inputs=inputs[b:b + 1], image=image[b:b + 1], valid=valid[b:b + 1],
                             **{n: (v[b:b + 1] if v is not None else None)
                                for n, v in maps.items()})
                if draw < cfg['rot_flip_prob']:
                    if not square:
                        k = 2 * (k % 2)
                    names = list(items)
                    items = dict(zip(names, joint_rot_flip([items[n] for n in names], k, flip)))
                for name, value in items.items():
                    outs[name].append(value)
            inputs = torch.cat(outs.pop('inputs'))
            image = torch.cat(outs.pop('image'))
            valid = torch.cat(outs.pop('valid'))
            maps = {n: (torch.cat(v) if v[0] is not None else None) for n, v in outs.items()}
        if cfg.get('rotate_prob', 0) > 0:
            max_angle = int(cfg.get('max_angle', 45))
            do_rot = torch.rand(batch, generator=gen) < cfg['rotate_prob']
            angles = torch.randint(-max_angle, max_angle, (batch,), generator=gen).float()
            angles = torch.where(do_rot, angles, torch.zeros_like(angles))
            if bool((angles != 0).any()):
                stacked = torch.cat([inputs, image], dim=1)
                stacked, maps, valid = joint_rotate(stacked, maps, valid, angles,
                                                    cfg.get('image_mode', 'bilinear'))
                inputs, image = stacked[:, :inputs.shape[1]], stacked[:, inputs.shape[1]:]
        return inputs, image, maps, valid

    def _needs_ema(self) -> bool:
        return any(getattr(m, 'uses_ema', False) for m in self.sparse_losses)

    # ---------------------------------------------------------------- training
    def loss(self, inputs: Tensor, data_samples) -> dict:
        """Sparse-label losses of a batch (see the module docstring)."""
        device = inputs.device
        batch, _, height, width = inputs.shape
        sparse = torch.stack([s.gt_sem_seg.data.reshape(height, width) for s in data_samples])
        sparse = sparse.long().to(device)
        valid = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
        for b, sample in enumerate(data_samples):
            img_h, img_w = sample.metainfo.get('img_shape', (height, width))[:2]
            valid[b, :img_h, :img_w] = True
        image = self.raw_image(inputs)

        pseudo = ema = None
        if self.stage >= 2 or self._needs_ema():
            if self.store is None:
                raise RuntimeError('stage 2 needs a pseudo_label_store')
            indices, boxes = [], []
            for sample in data_samples:
                meta = sample.metainfo
                if meta.get('flip', False):
                    raise ValueError('flip transforms in the train pipeline misalign the stored '
                                     'pseudo-labels; use the model-side train_augment instead')
                img_h, img_w = meta['img_shape'][:2]
                indices.append(int(meta['sample_idx']))
                boxes.append(meta.get('crop_box', (0, img_h, 0, img_w)))
            pseudo, ema, present = self.store.gather(indices, boxes, (height, width),
                                                     with_ema=self._needs_ema(), device=device)
            if self.stage >= 2 and not bool(present.all()):
                missing = [i for i, p in zip(indices, present.tolist()) if not p]
                raise RuntimeError(f'stage 2 without stored pseudo-labels for samples {missing}: '
                                   'add PseudoLabelHook to custom_hooks (it refreshes the EMA '
                                   'pseudo-labels during warm-up)')

        if self.training and self.train_augment:
            maps = dict(sparse=sparse, pseudo=pseudo, ema=ema)
            inputs, image, maps, valid = self._augment(inputs, image, maps, valid)
            sparse, pseudo, ema = maps['sparse'], maps['pseudo'], maps['ema']
        sparse = sparse.masked_fill(~valid, self.ignore_index)
        if pseudo is not None:
            pseudo = pseudo.masked_fill(~valid, self.ignore_index)

        feats, logits = self.forward_logits(inputs)
        chosen = [feats[i] for i in self.feature_indices]
        losses: Dict[str, Tensor] = {}
        for module in self.sparse_losses:
            terms = module(logits, sparse=sparse, image=image, feats=chosen, valid=valid,
                           pseudo=pseudo, ema=ema, stage=self.stage)
            for key, value in terms.items():
                if key in losses:
                    raise KeyError(f'two losses return {key!r}; give them distinct names')
                losses[key] = value
        if self.stage >= 2 and pseudo is not None and self.record_curve and self.store is not None:
            counts = segmentation_dice_counts(logits.detach().argmax(1), pseudo, self.num_classes,
                                              self.ignore_index)
            self.store.record_counts(counts)
        return losses
