# SEL on OCELOT 2023 tumour cells (background cells dropped: SEL is a 2-channel model),
# 10% of the tumour cells annotated; OCELOT challenge metric on the tumour class.
_base_ = [
    '../_base_/models/sel_vig-s.py', '../_base_/datasets/ocelot2023_cell.py',
    '../_base_/schedules/schedule_sel_500e.py', '../_base_/default_runtime.py'
]
classes = ('tumor_cell', )
class_map = {'2': 'tumor_cell', '1': None}  # OCELOT ids: 2 = TC, 1 = BC
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
default_hooks = dict(checkpoint=dict(interval=50, max_keep_ckpts=3))
