# Plain heatmap point detector (uncalibrated soft cross-entropy) with 10% of the points annotated:
# the baseline SEL and PCL calibrate. Same model, data, subset, seed and schedule as
# configs/sel/sel_r18-fpn_40e_ihc-demo-10pct.py and configs/pcl/pcl_r18-fpn_40e_ihc-demo-10pct.py.
_base_ = [
    '../_base_/models/heatmap_point_r18_fpn.py', '../_base_/datasets/ihc_demo_points.py',
    '../_base_/schedules/schedule_demo_cpu.py', '../_base_/default_runtime.py'
]
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=10, max_keep_ckpts=2))
# overlays: TP/FP/FN by the metric's matching and radius (6 px), drawn 3x larger
visualizer = dict(
    type='PointDetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer', match_radius=6, match_method='greedy', upscale=3)
