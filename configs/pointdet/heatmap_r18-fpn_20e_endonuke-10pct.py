# Plain heatmap point detector (uncalibrated soft cross-entropy), 3 classes, on the bundled EndoNuke
# expert points with 10% of the nuclei of each training tile annotated: the baseline of
# configs/pcl/pcl_r18-fpn_20e_endonuke-10pct.py (same model, data, subset, seed and schedule).
# Evaluation: test = acquisition block D (never trained on), every expert point.
_base_ = [
    '../_base_/models/heatmap_point_r18_fpn.py', '../_base_/datasets/endonuke_points.py',
    '../_base_/schedules/schedule_demo_cpu.py', '../_base_/default_runtime.py'
]
num_classes = 3
max_epochs = 20
model = dict(
    head=dict(
        num_classes=num_classes,
        # nuclei of ~10 px: Gaussian radius 5, peaks >= 4 px apart; threshold 0.1 (PCL paper)
        codec=dict(num_classes=num_classes, radius=5, min_distance=4, score_thr=0.1)))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=7),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
# the overlay legend states the radius of the metric (6 px); tiles are drawn 4x larger
visualizer = dict(
    type='PointDetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer', match_radius=6, match_method='greedy', upscale=4)
