# Plain heatmap point detector (soft cross-entropy) on the bundled demo data, every point annotated.
# This is the supervised upper reference for the 10% configs of the SEL/PCL demos.
_base_ = [
    '../_base_/models/heatmap_point_r18_fpn.py', '../_base_/datasets/ihc_demo_points.py',
    '../_base_/schedules/schedule_demo_cpu.py', '../_base_/default_runtime.py'
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=[
    dict(type='LoadHistologyImage'),
    dict(type='PointRandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PointRandomRotate90', prob=0.5),
    dict(type='PackPointDetInputs'),
])))
# evaluate on the held-out tile
test_dataloader = dict(dataset=dict(
    data_prefix=dict(img='images/val', ann='annotations/val'),
    pipeline=[dict(type='LoadHistologyImage'), dict(type='PackPointDetInputs')]))
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=10, max_keep_ckpts=2))
# overlays: TP/FP/FN by the metric's matching and radius (6 px), drawn 3x larger
visualizer = dict(
    type='PointDetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer', match_radius=6, match_method='greedy', upscale=3)
