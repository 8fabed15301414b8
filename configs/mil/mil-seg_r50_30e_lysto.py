# MIL counting, stage 3 (segmentation on pseudo masks), reference defaults: the stage-1/2 encoder
# (frozen, with frozen BatchNorm statistics: fixes the reference's drifting BN, trap T7) + the
# U-Net decoder, soft Dice on the cell channel, Adam lr 5e-4, wd 1e-4, batch 32, 30 epochs, no
# validation. data_root is the pseudo-mask folder written by tools/mil/run_pipeline.py
# (img/<id>.png + ann/<id>.png with 0/1 labels).
_base_ = ['../_base_/seg_default_runtime.py']
data_root = 'work_dirs/mil/lysto_r50/pseudo_masks/'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        size_divisor=32,  # training batches are padded; padded pixels (255) are ignored
        pad_val=0,
        seg_pad_val=255),
    backbone=dict(
        type='ResNet', depth=50, out_indices=(0, 1, 2, 3), norm_cfg=norm_cfg, style='pytorch',
        frozen_stages=4, norm_eval=True),
    decode_head=dict(
        type='MILUNetHead',
        in_channels=[256, 512, 1024, 2048],
        channels=64,
        num_classes=2,
        norm_cfg=norm_cfg,
        loss_decode=dict(type='MILDiceLoss', loss_weight=1.0, eps=1e-6)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='MILPseudoMaskDataset', data_root=data_root, pipeline=train_pipeline))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=5e-4, weight_decay=1e-4))
param_scheduler = []
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=30, val_interval=1000)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=True),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=5, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=True)
