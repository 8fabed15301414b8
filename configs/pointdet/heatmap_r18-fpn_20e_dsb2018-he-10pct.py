# Plain soft cross-entropy on the bundled DSB2018 H&E tiles (expert mask centroids, one class),
# 10% of the nuclei of each training tile annotated; split: whole appearance group "white" held
# out as test (data/real/splits/dsb2018_he_group.json; the random-tile split is
# dsb2018_he_random.json, set `*_dataloader.dataset.split_file`). Baseline of
# configs/sel/sel_r18-fpn_20e_dsb2018-he-10pct.py.
_base_ = [
    '../_base_/models/heatmap_point_r18_fpn.py', '../_base_/datasets/dsb2018_he_points.py',
    '../_base_/schedules/schedule_demo_cpu.py', '../_base_/default_runtime.py'
]
num_classes = 1
max_epochs = 20
model = dict(
    head=dict(
        num_classes=num_classes,
        # nuclei of 15-40 px: Gaussian radius 6, peaks >= 6 px apart
        codec=dict(num_classes=num_classes, radius=6, min_distance=6, score_thr=0.1)))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=8),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
visualizer = dict(
    type='PointDetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer', match_radius=8, match_method='greedy', upscale=3)
