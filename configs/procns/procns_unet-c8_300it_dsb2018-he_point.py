# ProCNS (pCE + PRSA, then EMA pseudo-labels + ANPM masking + soft labels) on DSB2018 H&E nuclei
# from point labels. CPU scale (the measured experiments): PyMIC U-Net at half width
# (channels 8..128 instead of 16..256), from scratch, 96x96 crops, batch 4, 300 iterations.
# The paper-width network is `configs/_base_/models/procns_unet.py` (drop the `model` override).
# Model selection: best validation mDice (val split, every 50 iterations), reported on the test
# split (tools/test.py with the best checkpoint).
_base_ = [
    '../_base_/models/procns_unet.py', '../_base_/datasets/dsb2018_he_sparse_seg.py',
    '../_base_/schedules/schedule_procns_cpu.py', '../_base_/seg_default_runtime.py'
]
model = dict(backbone=dict(channels=(8, 16, 32, 64, 128)),
             decode_head=dict(in_channels=8, channels=8))
# epoch = one pass over the 15 training tiles (4 iterations at batch 4): 300 iterations = 75
# epochs; stage 2 after 40 epochs (160 iterations); EMA refresh / ANPM masking every 5 epochs
# (every epoch in the paper; CPU budget)
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        refresh_pipeline={{_base_.refresh_pipeline}},
        warmup_epochs=40,
        refresh_interval=5,
        anpm=dict(conf_thr=0.5, r_threshold=0.95, curve_delay_epochs=1, mask_interval_epochs=5))
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=50, max_keep_ckpts=1,
                    save_best='mDice', rule='greater'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False))
