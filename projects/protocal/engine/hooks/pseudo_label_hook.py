"""Iteration-aware two-stage schedule of ProCNS (and EMA pseudo-label baselines), an mmengine
hook.

* ``before_train_iter``: tells the segmentor the iteration and the stage
  (stage 2 from ``thr_iter = warmup_epochs x iters_per_epoch``).
* ``after_train_iter`` at every epoch end (``iters_per_epoch`` iterations, by default the length of
  the train loader; works with ``IterBasedTrainLoop``):
  - warm-up (``iter <= thr_iter``): EMA refresh of every training image's soft label
    (full un-augmented image, eval mode, spec 5.1);
  - stage 2 with ANPM: learning-curve test per foreground class (spec 5.2), then the masking pass
    (spec 5.3).
* ``before_save_checkpoint`` / ``after_load_checkpoint``: the :class:`PseudoLabelStore` goes into
  every checkpoint (key ``pseudo_label_store``) and is restored on resume.

Prediction passes are sharded over processes (``rank::world_size``) and all-gathered, so every
process keeps an identical store; data-loader workers never hold state.
"""
import copy
from typing import Dict, Optional, Sequence

import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import DATASETS, HOOKS

from protocal.models.losses.procns import anpm_noise_mask, saturation_epoch

__all__ = ['PseudoLabelHook']

_WRAPPERS = ('RepeatDataset', 'ClassBalancedDataset')


@HOOKS.register_module()
class PseudoLabelHook(Hook):
    """Two-stage schedule, EMA pseudo-label refresh and ANPM masking.

    Args:
        warmup_epochs: ``thr_epoch`` (stage 2 starts after this many epochs). Exclusive with
            ``warmup_iters``.
        warmup_iters: stage-2 start in iterations.
        iters_per_epoch: epoch length in iterations (default: ``len(train_dataloader)``).
        refresh_pipeline: pipeline that loads a training image *without* random transforms and
            packs it (``sample_idx`` and ``img_shape`` in the meta keys). Required.
        refresh_interval: EMA refresh every this many epochs during warm-up (1 = spec).
        anpm: ``None`` (no masking: EMA pseudo-labels only) or dict with ``conf_thr`` (0.5),
            ``r_threshold`` (0.95), ``curve_delay_epochs`` (1), ``mask_interval_epochs`` (1),
            ``class_constraint`` (True), ``guard_keep_fg`` (0.5), ``guard_max_bg`` (0.95),
            ``x_units`` ('epochs'; 'iterations' = reference), ``reset_on_skip`` (False; True =
            reference: a skipped image's pseudo-label is reset to argmax(EMA), trap 10).
        batch_size: images per forward pass of the refresh / masking passes.
    """

    priority = 'NORMAL'

    def __init__(self,
                 refresh_pipeline: Sequence[dict],
                 warmup_epochs: Optional[int] = None,
                 warmup_iters: Optional[int] = None,
                 iters_per_epoch: Optional[int] = None,
                 refresh_interval: int = 1,
                 anpm: Optional[dict] = None,
                 batch_size: int = 1) -> None:
        if (warmup_epochs is None) == (warmup_iters is None):
            raise ValueError('give exactly one of warmup_epochs and warmup_iters')
        self.refresh_pipeline = list(refresh_pipeline)
        self.warmup_epochs = warmup_epochs
        self.warmup_iters = warmup_iters
        self.iters_per_epoch = iters_per_epoch
        self.refresh_interval = max(int(refresh_interval), 1)
        defaults = dict(conf_thr=0.5, r_threshold=0.95, curve_delay_epochs=1,
                        mask_interval_epochs=1, class_constraint=True, guard_keep_fg=0.5,
                        guard_max_bg=0.95, x_units='epochs', reset_on_skip=False)
        if anpm is not None:
            unknown = set(anpm) - set(defaults)
            if unknown:
                raise ValueError(f'unknown anpm keys {sorted(unknown)}; known: {sorted(defaults)}')
            defaults.update(anpm)
            self.anpm = defaults
        else:
            self.anpm = None
        self.batch_size = batch_size
        self.thr_iter = None
        self._dataset = None

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _epoch_length(self, runner) -> int:
        if self.iters_per_epoch is None:
            self.iters_per_epoch = len(runner.train_dataloader)
        return self.iters_per_epoch

    def _setup(self, runner) -> None:
        ipe = self._epoch_length(runner)
        self.thr_iter = (self.warmup_iters if self.warmup_iters is not None else
                         self.warmup_epochs * ipe)
        model = self._model(runner)
        if getattr(model, 'store', None) is None:
            raise ValueError('PseudoLabelHook needs a segmentor with a pseudo_label_store')

    def _refresh_dataset(self, runner):
        if self._dataset is None:
            cfg = copy.deepcopy(runner.cfg.train_dataloader.dataset)
            while cfg.get('type') in _WRAPPERS:
                cfg = cfg['dataset']
            cfg['pipeline'] = self.refresh_pipeline
            cfg['test_mode'] = False
            self._dataset = DATASETS.build(cfg)
        return self._dataset

    def stage_of(self, iteration: int) -> int:
        return 2 if iteration >= self.thr_iter else 1

    @torch.no_grad()
    def predict_train_images(self, runner) -> Dict[int, tuple]:
        """Softmax of every training image (this process's shard), gathered: idx -> (probs, id)."""
        model = self._model(runner)
        dataset = self._refresh_dataset(runner)
        rank, world = get_rank(), get_world_size()
        indices = list(range(rank, len(dataset), world))
        was_training = model.training
        model.eval()
        local = {}
        try:
            for start in range(0, len(indices), self.batch_size):
                batch = pseudo_collate([dataset[i] for i in indices[start:start + self.batch_size]])
                data = model.data_preprocessor(batch, False)
                metas = [s.metainfo for s in data['data_samples']]
                probs = model.predict_probs(data['inputs'], metas)
                for prob, meta in zip(probs, metas):
                    local[int(meta['sample_idx'])] = (prob, str(meta.get('img_path', '')))
        finally:
            model.train(was_training)
        if world == 1:
            return local
        merged = {}
        for part in all_gather_object(local):
            merged.update(part)
        return merged

    # ---------------------------------------------------------------- passes
    def refresh(self, runner) -> None:
        store = self._model(runner).store
        for idx, (prob, name) in sorted(self.predict_train_images(runner).items()):
            store.ema_update(idx, prob, name)
        store.num_refreshes += 1
        print_log(f'[PseudoLabelHook] iter {runner.iter + 1}: EMA refresh #{store.num_refreshes} '
                  f'of {len(store)} images', logger='current')

    def curve_test(self, runner, epoch_after: int) -> None:
        store = self._model(runner).store
        history = store.dice_history()
        cfg = self.anpm
        for cls in range(1, store.num_classes):
            if bool(store.released[cls]):
                continue
            update_epoch = saturation_epoch(history[:, cls].tolist(), self.iters_per_epoch, 1,
                                            cfg['r_threshold'], cfg['x_units'])
            if update_epoch is not None and epoch_after >= update_epoch:
                store.released[cls] = True
                store.release_epoch[cls] = epoch_after
                print_log(f'[PseudoLabelHook] class {cls} released for masking after '
                          f'{epoch_after} stage-2 epochs (saturation epoch {update_epoch})',
                          logger='current')

    def mask_pass(self, runner) -> None:
        store = self._model(runner).store
        cfg = self.anpm
        changed = skipped = 0
        for idx, (prob, _) in sorted(self.predict_train_images(runner).items()):
            pseudo = store.pseudo[idx]
            noisy, skip = anpm_noise_mask(prob[None], pseudo[None], store.released,
                                          cfg['conf_thr'], store.ignore_index,
                                          cfg['class_constraint'], cfg['guard_keep_fg'],
                                          cfg['guard_max_bg'])
            if bool(skip[0]):
                skipped += 1
                if cfg['reset_on_skip']:
                    store.reset_pseudo_from_ema(idx)
                continue
            store.mask_pixels(idx, noisy[0])
            changed += int(noisy.sum())
        store.num_mask_passes += 1
        print_log(f'[PseudoLabelHook] iter {runner.iter + 1}: ANPM pass masked {changed} px, '
                  f'{skipped} images skipped', logger='current')

    # ---------------------------------------------------------------- hook points
    def before_train(self, runner) -> None:
        self._setup(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.thr_iter is None:
            self._setup(runner)
        self._model(runner).set_train_progress(runner.iter, self.stage_of(runner.iter))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        done = runner.iter + 1
        ipe = self.iters_per_epoch
        if self.stage_of(runner.iter) >= 2:
            # per-iteration ANPM counts, summed over processes every iteration (cheap: C x 3)
            self._model(runner).store.sync_history()
        if done % ipe:
            return
        epoch = done // ipe
        if done <= self.thr_iter:
            if epoch % self.refresh_interval == 0 or done == self.thr_iter:
                self.refresh(runner)
            return
        if self.anpm is None:
            return
        epoch_after = epoch - self.thr_iter // ipe
        if epoch_after > self.anpm['curve_delay_epochs']:
            self.curve_test(runner, epoch_after)
        store = self._model(runner).store
        if (bool(store.released[1:].any()) and epoch_after >= 1
                and epoch % self.anpm['mask_interval_epochs'] == 0):
            self.mask_pass(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['pseudo_label_store'] = self._model(runner).store.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('pseudo_label_store')
        if state is not None:
            self._model(runner).store.load_state_dict(state)
