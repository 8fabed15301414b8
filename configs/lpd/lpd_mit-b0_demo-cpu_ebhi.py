# CPU demo / experiment config: LPD on EBHI-Seg (bundled 36-image subset by default), trained with
# the image-level class (the folder) only; evaluated against the expert masks.
# Scale for CPU (2 shared cores): MiT-B0 (the B1 paper configs cost ~8 s per batch of 8 at 224 px
# here), 112 px input, K = 3, 300 iterations (warm-up 50), L_sim on one selected (image, prototype)
# pair per image (sim_pairs_per_image=1: uniform sample, weighted so that L_sim stays an unbiased
# estimate of the mean over all selected pairs; the default of the practical configs) with a small
# frozen encoder (random ResNet-18 at 64 px, projected to 256-d), no TTA/CRF in validation
# (tools/lpd/make_pseudo_masks.py --tta --crf runs the full pipeline).
# Full 96-image copy: --cfg-options train_dataloader.dataset.data_root=/path/to/ebhi_seg
#   train_dataloader.dataset.split_file=data/real/splits/ebhi_seg96_train.txt (same for val/test).
_base_ = [
    '../_base_/seg_default_runtime.py', '../_base_/models/lpd_mit-b1.py',
    '../_base_/datasets/ebhi_seg_wsss.py', '../_base_/schedules/schedule_lpd_demo_cpu.py'
]
img_scale = (112, 112)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='SegRandomRotate90', prob=0.5),
    dict(type='PackWSSSInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='LoadWSSSAnnotations', mask_mode='binary', threshold=128),
    dict(type='PackWSSSInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True),
    # MiT-B0 (mmseg segformer_mit-b0 sizes) with LPD's strides (4, 2, 2, 1)
    backbone=dict(embed_dims=32, num_heads=[1, 2, 5, 8], num_layers=[2, 2, 2, 2]),
    head=dict(num_classes=6, num_prototypes=3, in_channels=[32, 64, 160, 256], proto_dim=256),
    frozen_encoder=dict(
        _delete_=True,
        backbone=dict(type='ResNetV1c', depth=18, out_indices=(3, ), norm_eval=True),
        embed_dims=256,
        checkpoint=None,
        input_size=(64, 64)),
    warmup_iters=50,
    sim_pairs_per_image=1,
    test_cfg=dict(tta=False, crf=None))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=300, max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
