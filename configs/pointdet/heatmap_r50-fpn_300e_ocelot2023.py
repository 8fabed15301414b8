# Plain heatmap point detector (soft cross-entropy, every cell annotated) on OCELOT 2023 cells:
# ResNet-50 + FPN from scratch, 512 px random crops with flips / 90-degree rotations,
# the PCL schedule (Adam 1e-2, MultiStepLR per iteration, 300 epochs), OCELOT challenge metric.
_base_ = [
    '../_base_/models/heatmap_point_r50_fpn.py', '../_base_/datasets/ocelot2023_cell.py',
    '../_base_/schedules/schedule_pcl_300e.py', '../_base_/default_runtime.py'
]
train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='PointRandomCrop', crop_size=(512, 512)),
    dict(type='PointRandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PointRandomRotate90', prob=0.5),
    dict(type='PackPointDetInputs'),
]
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))
default_hooks = dict(checkpoint=dict(interval=50, max_keep_ckpts=3))
