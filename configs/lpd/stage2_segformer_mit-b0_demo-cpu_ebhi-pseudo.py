# LPD stage 2: a stock mmseg SegFormer (EncoderDecoder + SegformerHead, mmseg's own
# _base_/models/segformer_mit-b0.py) trained on LPD pseudo masks of the EBHI-Seg train split, tested
# on the expert masks of the case-disjoint test split (no image-level label at test time).
# Chain (see configs/lpd/README.md):
#   python tools/lpd/make_pseudo_masks.py configs/lpd/lpd_mit-b0_demo-cpu_ebhi.py CKPT \
#       --split train --out-dir work_dirs/lpd_pseudo_masks
#   python tools/train.py configs/lpd/stage2_segformer_mit-b0_demo-cpu_ebhi-pseudo.py \
#       [--cfg-options train_dataloader.dataset.seg_map_root=OTHER_DIR]
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py', '../_base_/seg_default_runtime.py',
    '../_base_/datasets/ebhi_seg_wsss.py', '../_base_/schedules/schedule_lpd_demo_cpu.py'
]
pseudo_mask_root = 'work_dirs/lpd_pseudo_masks'
img_scale = (112, 112)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=img_scale),  # mmseg's base sets neither size nor size_divisor
    decode_head=dict(num_classes=7, norm_cfg=norm_cfg))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    # pseudo masks: class indices 0..6 (6 = Background), validated
    dict(type='LoadWSSSAnnotations', mask_mode='index'),
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
train_dataloader = dict(
    dataset=dict(seg_map_root=pseudo_mask_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=300, max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
