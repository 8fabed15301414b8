# PCL on OCELOT 2023 cells (tumour cell / background cell, H&E, 0.2 um/px), 10% annotated.
# Same model and schedule as the HER2 config; evaluated with the OCELOT challenge metric
# (greedy by score within 15 px, counts pooled over the split). Layout: docs/datasets.md.
_base_ = [
    '../_base_/models/pcl_vig-s.py', '../_base_/datasets/ocelot2023_cell.py',
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
default_hooks = dict(checkpoint=dict(interval=50, max_keep_ckpts=3))
