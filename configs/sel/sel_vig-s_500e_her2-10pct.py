# SEL (Xu et al., BIBM 2023) on the HER2 IHC point dataset, 10% of the tumour cells annotated.
# Reference parity: isotropic ViG-S from scratch, whole 1024x1024 patches without augmentation,
# Adam 1e-2 with MultiStepLR([50, 150]) stepped per iteration, 500 epochs, batch 2; inference on
# the tumour channel at p >= 0.7 with min_distance 6; reference metric (max bipartite matching,
# d < 15 px, per-image P/R averaged). SEL is a 2-channel model, so only tumour cells are kept.
# Data layout: docs/datasets.md ("HER2"); put the data in data/her2/.
_base_ = [
    '../_base_/models/sel_vig-s.py', '../_base_/datasets/her2_points.py',
    '../_base_/schedules/schedule_sel_500e.py', '../_base_/default_runtime.py'
]
classes = ('tumor', )
class_map = {'other': None, '2': None}  # drop non-tumour cells
train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='SparsePointSampling', ratio=0.1, seed=0, mode='bernoulli',
         keep_first_per_class=True),
    dict(type='PackPointDetInputs'),
]
test_pipeline = [dict(type='LoadHistologyImage'), dict(type='PackPointDetInputs')]
train_dataloader = dict(
    batch_size=2,
    dataset=dict(metainfo=dict(classes=classes), class_map=class_map, pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(metainfo=dict(classes=classes), class_map=class_map, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='PointF1Metric', mode='reference', radius=15, strict=True,
                     min_gt_per_image=0)
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(interval=50, max_keep_ckpts=3))
