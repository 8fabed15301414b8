# PCL on the HER2 IHC point dataset (classes tumour / other), 10% of the cells annotated.
# Reference parity: isotropic ViG-S from scratch, whole 1024x1024 patches without augmentation,
# Adam 1e-2 with MultiStepLR([50, 150]) stepped per iteration, 300 epochs, batch 8; inference per
# class at p >= 0.1 with min_distance 12; reference metric (max bipartite matching, d < 15 px,
# per-image P/R averaged over images with >= 10 cells of the class).
# Data layout: docs/datasets.md ("HER2"); put the data in data/her2/.
_base_ = [
    '../_base_/models/pcl_vig-s.py', '../_base_/datasets/her2_points.py',
    '../_base_/schedules/schedule_pcl_300e.py', '../_base_/default_runtime.py'
]
train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='SparsePointSampling', ratio=0.1, seed=0, mode='bernoulli',
         keep_first_per_class=True),
    dict(type='PackPointDetInputs'),
]
test_pipeline = [dict(type='LoadHistologyImage'), dict(type='PackPointDetInputs')]
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
val_evaluator = dict(type='PointF1Metric', mode='reference', radius=15, strict=True,
                     min_gt_per_image=10)
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(interval=50, max_keep_ckpts=3))
