# Example detector of the whole-slide worked example (docs/slides.md): the plain heatmap point
# detector (ResNet-18 + FPN, soft cross-entropy) trained with *every* nucleus annotated on the 15
# training tiles of the bundled DSB2018 H&E subset (expert mask centroids, class 'nucleus'),
# 30 epochs on CPU (~2 min). A small demonstration model, not a validated nucleus detector.
_base_ = [
    '../_base_/models/heatmap_point_r18_fpn.py', '../_base_/datasets/dsb2018_he_points.py',
    '../_base_/schedules/schedule_demo_cpu.py', '../_base_/default_runtime.py'
]
num_classes = 1
max_epochs = 30
model = dict(
    head=dict(
        num_classes=num_classes,
        # nuclei of 15-40 px: Gaussian radius 6, peaks >= 6 px apart; threshold chosen on the val
        # split (tools/analysis_tools/threshold_sweep.py --split val: F1 0.708 at 0.05, 0.703 at
        # 0.1, 0.237 at 0.5)
        codec=dict(num_classes=num_classes, radius=6, min_distance=6, score_thr=0.05)),
    test_cfg=dict(mode='whole', crop_size=512))
train_dataloader = dict(dataset=dict(sparse_ratio=None))   # all nuclei annotated
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=8),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
