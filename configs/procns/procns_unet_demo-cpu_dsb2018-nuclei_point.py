# CPU demo / CI config: ProCNS on the bundled 2-tile DSB2018 demo (data/demo/dsb2018_nuclei, real
# instance masks; 1 train tile, 1 val tile), point labels, 64x64 crops, 8 iterations: stage 2
# (pseudo-labels) starts at iteration 2, so one run exercises both stages and the store.
_base_ = [
    '../_base_/models/procns_unet.py', '../_base_/schedules/schedule_procns_cpu.py',
    '../_base_/seg_default_runtime.py'
]
data_root = 'data/demo/dsb2018_nuclei/'
num_classes = 2
metainfo = dict(classes=('background', 'nucleus'), palette=[[0, 0, 0], [255, 64, 64]])
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
             'flip', 'flip_direction', 'reduce_zero_label', 'sample_idx', 'sample_id', 'crop_box',
             'volume_id')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSparseSegAnnotations', num_classes=num_classes, target='sparse',
         mask_mode='instance'),
    dict(type='GenerateSparseLabels', kind='point', num_classes=num_classes, seed=0, radius=2),
    dict(type='SparseSegRandomCrop', crop_size=(64, 64)),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
refresh_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs', meta_keys=meta_keys)]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSparseSegAnnotations', num_classes=num_classes, target='full',
         mask_mode='instance'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
common = dict(type='SparseSegDataset', data_root=data_root, metainfo=metainfo)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**common, img_template='images/train/{id}.png',
                 mask_template='masks/train/{id}.png', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**common, img_template='images/val/{id}.png', mask_template='masks/val/{id}.png',
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='DiceHD95Metric')
test_evaluator = val_evaluator

max_iters = 8
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=8)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters,
                        by_epoch=False)]
custom_hooks = [
    dict(type='PseudoLabelHook', refresh_pipeline=refresh_pipeline, warmup_iters=2,
         iters_per_epoch=2, anpm=dict(conf_thr=0.5, curve_delay_epochs=0))
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=2),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    visualization=dict(type='SegVisualizationHook', draw=False))
