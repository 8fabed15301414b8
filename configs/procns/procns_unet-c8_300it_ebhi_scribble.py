# ProCNS on EBHI-Seg colorectal lesions from scribble labels (seeded skeleton scribbles of the
# lesion and of the background); same network, crops, schedule and selection as the DSB2018
# config (CPU scale: half-width U-Net, 96x96 crops, batch 4, 300 iterations).
_base_ = [
    '../_base_/models/procns_unet.py', '../_base_/datasets/ebhi_seg_sparse_seg.py',
    '../_base_/schedules/schedule_procns_cpu.py', '../_base_/seg_default_runtime.py'
]
model = dict(backbone=dict(channels=(8, 16, 32, 64, 128)),
             decode_head=dict(in_channels=8, channels=8))
# 24 training images at batch 4 = 6 iterations per epoch: 300 iterations = 50 epochs; stage 2
# after 25 epochs (150 iterations)
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        refresh_pipeline={{_base_.refresh_pipeline}},
        warmup_epochs=25,
        refresh_interval=5,
        anpm=dict(conf_thr=0.5, r_threshold=0.95, curve_delay_epochs=1, mask_interval_epochs=5))
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=50, max_keep_ckpts=1,
                    save_best='mDice', rule='greater'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False))
