"""LPD: one-stage WSSS from image-level labels with learnable, diverse prototypes (mmseg).

:class:`LPDSegmentor` = any mmseg backbone (MiT-B1 in the paper) + a CAM head
(:class:`~protocal.models.heads.LearnablePrototypeCAMHead`, or :class:`LinearCAMHead` for the plain
CAM baseline) + the LPD losses. ``predict`` turns CAMs into pseudo masks (reference ``validate``):
optional TTA (h-flip x intensity factors), stage fusion, background score, optional dense CRF.

Training iteration (``t`` from the runner's ``MessageHub``):

* ``t < warmup_iters``: ``L = L_cls``;
* else ``L = L_cls + L_div + L_sim`` (weights inside the losses: lambda_div 0.5, lambda_sim 0.1).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...prototypes import expand_parent_labels, merge_subclasses
from .wsss_postprocess import DEFAULT_CRF, add_background, dense_crf, normalise_cams

__all__ = ['LPDSegmentor', 'FrozenImageEncoder']


class FrozenImageEncoder(nn.Module):
    """A frozen image encoder for L_sim: any registered backbone, global-average pooled.

    Built under its own seed, so every run (and every process) gets the same encoder. Parameters
    never require grad and the module stays in eval mode, but gradients **do** flow through it to
    its input (the CAM-masked image): that is L_sim's learning signal.

    Args:
        backbone: mmseg/mmengine backbone config.
        embed_dims: output dimension (the prototype dimension). If the backbone's pooled output
            has another size, a fixed random projection (seeded, ``N(0, 1/C)``) maps it, like the
            reference's randomly initialised 768->512 MedCLIP projection.
        checkpoint: local checkpoint file (``state_dict`` or a full mmengine checkpoint). None
            means **random initialisation**: L_sim then aligns the prototypes with random
            features of the masked images (documented in ``configs/lpd/README.md``).
        checkpoint_prefix: keep only keys with this prefix, stripped (``'backbone.'`` to reuse the
            backbone of a protocal/mmseg segmentor checkpoint).
        out_index: which backbone output to pool.
        input_size: resize the masked images to this size before encoding (None: as given).
        seed: seed of the random initialisation / projection.
    """

    def __init__(self, backbone: dict, embed_dims: int = 512, checkpoint: Optional[str] = None,
                 checkpoint_prefix: str = '', out_index: int = -1,
                 input_size: Optional[Sequence[int]] = None, seed: int = 0) -> None:
        super().__init__()
        self.out_index = out_index
        self.input_size = tuple(input_size) if input_size is not None else None
        self.checkpoint = checkpoint
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.backbone = MODELS.build(backbone)
            if hasattr(self.backbone, 'init_weights'):
                self.backbone.init_weights()
            if checkpoint:
                self._load(checkpoint, checkpoint_prefix)
            self.backbone.eval()  # some mmseg backbones' train() does not return self
            with torch.no_grad():
                channels = self._pool(self.backbone(torch.zeros(1, 3, 64, 64))).shape[1]
            if channels != embed_dims:
                proj = torch.randn(channels, embed_dims) / math.sqrt(channels)
                self.register_buffer('projection', proj)
            else:
                self.projection = None
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: str, prefix: str) -> None:
        state = torch.load(path, map_location='cpu', weights_only=False)
        if isinstance(state, dict) and 'state_dict' in state:
            state = state['state_dict']
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f'frozen encoder checkpoint {path!r} (prefix {prefix!r}) does not '
                             f'match the backbone: missing {missing[:5]} ({len(missing)}), '
                             f'unexpected {unexpected[:5]} ({len(unexpected)})')

    def _pool(self, outs) -> Tensor:
        feat = outs[self.out_index] if isinstance(outs, (list, tuple)) else outs
        return feat.mean((2, 3)) if feat.dim() == 4 else feat

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        if self.input_size is not None and tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode='bilinear',
                                   align_corners=False)
        emb = self._pool(self.backbone(images))
        if self.projection is not None:
            emb = emb @ self.projection
        return emb


@MODELS.register_module()
class LPDSegmentor(BaseSegmentor):
    """LPD segmentor (stage 1 of the WSSS pipeline: CAMs and pseudo masks).

    Args:
        backbone: mmseg backbone config (MiT-B1 with strides (4, 2, 2, 1) in the paper).
        head: CAM head config; ``num_classes`` = foreground classes.
        loss_cls: :class:`MultiStageBCELoss` config.
        loss_sim: :class:`PrototypeInfoNCELoss` config or None (needs ``frozen_encoder``).
        loss_div: :class:`PrototypeDiversityLoss` config or None.
        frozen_encoder: :class:`FrozenImageEncoder` kwargs (``backbone``, ``checkpoint``, ...).
        warmup_iters: iterations with L_cls only (3000).
        merge_train: subclass merge for L_cls (``'mean'``).
        sim_mask_alpha: L_sim mask ``M = A >= alpha * max(A)`` (0.5).
        sim_pairs_per_image: L_sim pair budget per image: of the selected (image, prototype)
            pairs of image ``b`` (``N_b`` of them) keep ``n_b = min(n, N_b)`` drawn uniformly
            without replacement (global torch RNG, i.e. the runner's seed). Every kept pair of
            image ``b`` is weighted ``N_b / (n_b * N)`` (``N = sum_b N_b``), so ``L_fg`` / ``L_bg``
            remain **unbiased** estimates of the spec's mean over all ``N`` selected pairs (the
            weights sum to 1; no pair is dropped when ``N_b <= n``: the loss is then exactly the
            full one). None = every pair (the reference). The frozen encoder then runs on at
            most ``2 * n * B`` images per batch instead of ``2 * N``.
        max_sim_pairs: cap on the pairs per batch (after ``sim_pairs_per_image``): a uniform
            random subset of ``m`` of the ``M`` remaining pairs, weights scaled by ``M / m`` (still
            unbiased). None = no cap.
        div_bg_score: constant background score of the L_div pseudo mask (0.2).
        div_prototypes: ``'raw'`` (P, needs ``proto_dim`` = last stage channels, the reference),
            ``'projected'`` (``MLP_4(P)``) or ``'auto'`` (raw if the dims match).
        test_cfg: ``merge`` ('max'), ``fusion_stages`` ((1, 2, 3)), ``fusion_weights``
            ((0.3, 0.3, 0.4)), ``bg_power`` (10), ``use_gt_labels`` (True: gate CAMs with the
            sample's ``gt_cls_label``; False or missing: predicted labels
            ``sigmoid(Z_4) > cls_thr``), ``cls_thr`` (0.5), ``tta`` (False), ``tta_flips``
            ((False, True)), ``tta_factors`` ((0.9, 1.0, 1.1)), ``crf`` (None or a dict of
            :func:`dense_crf` kwargs; ``True`` = the reference's).
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 loss_cls: dict = dict(type='MultiStageBCELoss'),
                 loss_sim: Optional[dict] = None,
                 loss_div: Optional[dict] = None,
                 frozen_encoder: Optional[dict] = None,
                 warmup_iters: int = 3000,
                 merge_train: str = 'mean',
                 sim_mask_alpha: float = 0.5,
                 max_sim_pairs: Optional[int] = None,
                 sim_pairs_per_image: Optional[int] = None,
                 div_bg_score: float = 0.2,
                 div_prototypes: str = 'auto',
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.head = MODELS.build(head)
        self.num_classes = self.head.num_classes
        self.num_per_class = self.head.num_per_class
        self.loss_cls = MODELS.build(loss_cls)
        has_protos = getattr(self.head, 'prototypes', None) is not None
        if (loss_sim is not None or loss_div is not None) and not has_protos:
            raise ValueError('loss_sim / loss_div need a prototype head '
                             '(LearnablePrototypeCAMHead); the linear CAM head has none')
        self.loss_sim = MODELS.build(loss_sim) if loss_sim is not None else None
        self.loss_div = MODELS.build(loss_div) if loss_div is not None else None
        if self.loss_div is not None and self.loss_div.num_per_class is None:
            self.loss_div.num_per_class = self.num_per_class
        if self.loss_sim is not None and frozen_encoder is None:
            raise ValueError('loss_sim needs frozen_encoder=dict(backbone=..., checkpoint=...)')
        # kept out of the module tree: not in state_dict, parameters() or DDP
        self._frozen = [FrozenImageEncoder(**frozen_encoder)] if (
            self.loss_sim is not None) else []
        if self._frozen and self._frozen[0].checkpoint is None:
            warnings.warn('LPD frozen encoder has no checkpoint: it is randomly initialised '
                          '(seeded), so L_sim aligns prototypes with random image features; '
                          'see configs/lpd/README.md')
        if div_prototypes not in ('raw', 'projected', 'auto'):
            raise ValueError(f"div_prototypes must be 'raw', 'projected' or 'auto', got "
                             f'{div_prototypes!r}')
        self.div_prototypes = div_prototypes
        self.warmup_iters = int(warmup_iters)
        self.merge_train = merge_train
        self.sim_mask_alpha = sim_mask_alpha
        for name, value in (('max_sim_pairs', max_sim_pairs),
                            ('sim_pairs_per_image', sim_pairs_per_image)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f'{name} must be None or an integer >= 1, got {value!r}')
        self.max_sim_pairs = None if max_sim_pairs is None else int(max_sim_pairs)
        self.sim_pairs_per_image = None if sim_pairs_per_image is None else int(
            sim_pairs_per_image)
        self.last_sim_pairs = (0, 0)  # (selected, encoded) pairs of the last L_sim call
        self.div_bg_score = div_bg_score
        self.train_cfg = train_cfg or {}
        cfg = dict(merge='max', fusion_stages=(1, 2, 3), fusion_weights=(0.3, 0.3, 0.4),
                   bg_power=10.0, use_gt_labels=True, cls_thr=0.5, tta=False,
                   tta_flips=(False, True), tta_factors=(0.9, 1.0, 1.1), crf=None)
        cfg.update(test_cfg or {})
        if len(cfg['fusion_stages']) != len(cfg['fusion_weights']):
            raise ValueError('test_cfg.fusion_stages and fusion_weights differ in length')
        self.test_cfg = cfg
        self.align_corners = False
        self._local_iter = 0

    # ------------------------------------------------------------------ helpers
    @property
    def frozen_encoder(self) -> Optional[FrozenImageEncoder]:
        return self._frozen[0] if self._frozen else None

    def _current_iter(self) -> int:
        hub = MessageHub.get_current_instance()
        it = hub.get_info('iter') if hub is not None else None
        return int(it) if it is not None else self._local_iter

    @staticmethod
    def _labels(data_samples, num_classes: int, required: bool = True) -> Optional[Tensor]:
        labels = []
        for ds in data_samples or []:
            label = ds.get('gt_cls_label') if hasattr(ds, 'get') else None
            if label is None:
                if required:
                    path = ds.metainfo.get('img_path', '?')
                    raise KeyError(f'{path}: sample has no gt_cls_label (use PackWSSSInputs and a '
                                   f'WSSS dataset)')
                return None
            labels.append(torch.as_tensor(label, dtype=torch.float32))
        if not labels:
            return None
        out = torch.stack(labels)
        if out.shape[1] != num_classes:
            raise ValueError(f'gt_cls_label has {out.shape[1]} classes, the head {num_classes}')
        return out

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        return list(self.backbone(inputs))

    def _forward(self, inputs: Tensor, data_samples=None):
        return self.head(self.extract_feat(inputs))['cams'][-1]

    # ------------------------------------------------------------------ training
    def loss(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        labels = self._labels(data_samples, self.num_classes).to(inputs.device)
        feats = self.extract_feat(inputs)
        out = self.head(feats)
        parents = [merge_subclasses(z, self.num_per_class, self.merge_train) for z in out['logits']]
        losses = {self.loss_cls.loss_name: self.loss_cls(parents, labels)}
        it = self._current_iter()
        self._local_iter += 1
        if it < self.warmup_iters:
            return losses
        cam4 = out['cams'][-1]
        if self.loss_sim is not None:
            z4 = out['logits'][-1]
            class_mean = merge_subclasses(z4, self.num_per_class, 'mean')
            losses[self.loss_sim.loss_name] = self._sim_loss(inputs, cam4, z4, class_mean, labels)
        if self.loss_div is not None:
            with torch.no_grad():
                merged = merge_subclasses(cam4.detach(), self.num_per_class, 'mean')
                bg = torch.full_like(merged[:, :1], self.div_bg_score)
                pseudo = torch.cat([bg, merged], 1).argmax(1)  # 0 = bg, c + 1 = class c
            losses[self.loss_div.loss_name] = self.loss_div(feats[-1], self._div_protos(feats[-1]),
                                                            pseudo)
        return losses

    def _div_protos(self, feat4: Tensor) -> Tensor:
        raw = self.head.prototypes
        if self.div_prototypes == 'raw' or (self.div_prototypes == 'auto'
                                            and raw.shape[1] == feat4.shape[1]):
            return raw
        return self.head.projected_prototypes(len(self.head.in_channels) - 1)

    def _sample_sim_pairs(self, sel: Tensor):
        """Selected pairs ``sel`` (B, M) bool -> kept ``(b_idx, k_idx, weights)``.

        ``weights`` (N_kept,) are the per-pair weights of the unbiased estimate of the mean over
        all selected pairs (see ``sim_pairs_per_image``), or None when every kept pair has the
        same weight (plain mean: no subsampling, or only the uniform ``max_sim_pairs`` subset).
        Random draws use the global (CPU) torch generator.
        """
        b_idx, k_idx = sel.nonzero(as_tuple=True)
        total = b_idx.numel()
        weights = None
        budget = self.sim_pairs_per_image
        if budget is not None and total:
            counts = torch.bincount(b_idx.cpu(), minlength=sel.shape[0])
            if int(counts.max()) > budget:
                keep, w = [], []
                starts = torch.cumsum(counts, 0) - counts  # nonzero() is sorted by b
                for start, n_b in zip(starts.tolist(), counts.tolist()):
                    if n_b <= budget:
                        keep.append(torch.arange(start, start + n_b))
                        w.append(torch.ones(n_b, dtype=torch.float64))
                    else:
                        pick = torch.randperm(n_b)[:budget].sort().values
                        keep.append(start + pick)
                        w.append(torch.full((budget, ), n_b / budget, dtype=torch.float64))
                keep = torch.cat(keep).to(b_idx.device)
                b_idx, k_idx = b_idx[keep], k_idx[keep]
                weights = torch.cat(w) / total
        cap = self.max_sim_pairs
        if cap is not None and b_idx.numel() > cap:
            kept = b_idx.numel()
            keep = torch.randperm(kept)[:cap].sort().values.to(b_idx.device)
            b_idx, k_idx = b_idx[keep], k_idx[keep]
            if weights is not None:
                weights = weights[keep.cpu()] * (kept / cap)
        self.last_sim_pairs = (total, int(b_idx.numel()))
        return b_idx, k_idx, weights

    def _sim_loss(self, inputs: Tensor, cam4: Tensor, z4: Tensor, parent4: Tensor,
                  labels: Tensor) -> Tensor:
        """Select (b, k) with y_b,parent(k) = 1 and z_4,k > class mean; InfoNCE on masked images.

        The foreground and background masked images of all kept pairs go through the frozen
        encoder in **one** batched call (``2N`` images), the output is split in two.
        """
        sel = (z4 > expand_parent_labels(parent4, self.num_per_class)) & (
            expand_parent_labels(labels, self.num_per_class) > 0)
        b_idx, k_idx, weights = self._sample_sim_pairs(sel)
        protos = self.head.prototypes
        if b_idx.numel() == 0:
            return self.loss_sim(protos.new_zeros(0, protos.shape[1]),
                                 protos.new_zeros(0, protos.shape[1]), protos,
                                 k_idx, activation=cam4)
        fg, bg = self._encode_masked(inputs, cam4, b_idx, k_idx)
        if weights is not None:
            weights = weights.to(device=fg.device, dtype=fg.dtype)
        return self.loss_sim(fg, bg, protos, k_idx, activation=cam4, weights=weights)

    def _encode_masked(self, inputs: Tensor, cam4: Tensor, b_idx: Tensor, k_idx: Tensor,
                       batched: bool = True):
        """Frozen-encoder embeddings (N, D) of ``A * M * x`` and ``(1 - A)(1 - M) x`` for the pairs
        ``(b_idx, k_idx)``; ``batched=False`` runs two encoder calls (same values, for tests)."""
        encoder = self.frozen_encoder.to(inputs.device)
        cam = F.interpolate(cam4[b_idx, k_idx][:, None], size=inputs.shape[-2:],
                            mode='bilinear', align_corners=True)  # (N, 1, H, W), raw logits
        with torch.no_grad():
            mask = (cam >= self.sim_mask_alpha * cam.amax((2, 3), keepdim=True)).to(cam.dtype)
        images = inputs[b_idx]
        fg_img = cam * mask * images
        bg_img = (1 - cam) * (1 - mask) * images
        if not batched:
            return encoder(fg_img), encoder(bg_img)
        return encoder(torch.cat([fg_img, bg_img])).split(b_idx.numel())

    # ------------------------------------------------------------------ inference
    def _stage_maps(self, inputs: Tensor, labels: Optional[Tensor]):
        """Normalised, label-gated class maps of the fusion stages, and stage-4 parent logits."""
        out = self.head(self.extract_feat(inputs))
        if labels is None:
            z = merge_subclasses(out['logits'][-1], self.num_per_class, self.merge_train)
            labels = (z.sigmoid() > self.test_cfg['cls_thr']).float()
            none = labels.sum(1) == 0
            labels[none, z[none].argmax(1)] = 1.0  # at least one class per image
        maps = []
        for s in self.test_cfg['fusion_stages']:
            merged = merge_subclasses(out['cams'][s], self.num_per_class, self.test_cfg['merge'])
            maps.append(normalise_cams(merged, labels, inputs.shape[-2:]))
        return maps

    def class_activation_maps(self, inputs: Tensor, data_samples=None,
                              tta: Optional[bool] = None) -> Tensor:
        """Fused, normalised class maps (B, C, H, W) in [0, 1] (before the background score)."""
        cfg = self.test_cfg
        labels = None
        if cfg['use_gt_labels']:
            labels = self._labels(data_samples, self.num_classes, required=False)
            labels = labels.to(inputs.device) if labels is not None else None
        tta = cfg['tta'] if tta is None else tta
        views = [(f, m) for f in cfg['tta_flips'] for m in cfg['tta_factors']] if tta else [
            (False, 1.0)]
        acc = None
        for flip, factor in views:
            x = inputs * factor  # multiplies the normalised tensor, as ttach.Multiply does
            if flip:
                x = x.flip(-1)
            maps = self._stage_maps(x, labels)
            if flip:
                maps = [m.flip(-1) for m in maps]
            acc = maps if acc is None else [a + m for a, m in zip(acc, maps)]
        return sum(w * a / len(views) for w, a in zip(cfg['fusion_weights'], acc))

    def encode_decode(self, inputs: Tensor, batch_img_metas=None, data_samples=None) -> Tensor:
        """Class probabilities (B, C + 1, H, W), background last (before CRF)."""
        fused = self.class_activation_maps(inputs, data_samples)
        return add_background(fused, self.test_cfg['bg_power']).softmax(1)

    def _raw_images(self, inputs: Tensor) -> np.ndarray:
        pre = self.data_preprocessor
        mean = getattr(pre, 'mean', None)
        std = getattr(pre, 'std', None)
        imgs = inputs
        if mean is not None and std is not None and getattr(pre, '_enable_normalize', True):
            imgs = inputs * std + mean
        return imgs.clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()

    def predict(self, inputs: Tensor, data_samples=None):
        probs = self.encode_decode(inputs, data_samples=data_samples)
        crf = self.test_cfg.get('crf')
        if crf:
            kwargs = dict(DEFAULT_CRF)
            if isinstance(crf, dict):
                kwargs.update(crf)
            images = self._raw_images(inputs)
            refined = [
                torch.from_numpy(dense_crf(img, p.detach().float().cpu().numpy(), **kwargs))
                for img, p in zip(images, probs)
            ]
            probs = torch.stack(refined).to(probs.device)
        return self.postprocess_result(probs, data_samples)
