# OCELOT 2023 cell detection (v1.0.1, H&E, 1024x1024 at 0.2 um/px; see docs/datasets.md).
# Layout: data/ocelot2023_v1.0.1/images/{train,val,test}/cell/*.jpg and
#         data/ocelot2023_v1.0.1/annotations/{split}/cell/*.csv  ("x,y,label", 1 = BC, 2 = TC).
# Classes are ordered tumour first: TC -> 'tumor_cell' (label 0, heatmap channel 1),
# BC -> 'background_cell' (label 1, channel 2), as the SEL / PCL models expect (spec 1.2, T4).
#
# SparsePointSampling must come before the geometric transforms (it keys the subset on the
# image file name and the point order). Reference parity: no augmentation, whole 1024 px patches.
dataset_type = 'OCELOTCellDataset'
data_root = 'data/ocelot2023_v1.0.1/'
backend_args = None

train_pipeline = [
    dict(type='LoadHistologyImage', backend_args=backend_args),
    dict(type='SparsePointSampling', ratio=0.1, seed=0, mode='bernoulli'),
    dict(type='PointRandomCrop', crop_size=(512, 512)),
    dict(type='PointRandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PointRandomRotate90', prob=0.5),
    dict(type='PackPointDetInputs')
]
test_pipeline = [
    dict(type='LoadHistologyImage', backend_args=backend_args),
    dict(type='PackPointDetInputs')
]

train_dataloader = dict(
    batch_size=8,  # PCL: 8, SEL: 2 (spec section 0)
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        test_mode=True,
        pipeline=test_pipeline))

# OCELOT official metric (spec section 7): greedy matching within 15 px (3 um), dataset-level sums.
val_evaluator = dict(type='PointF1Metric', mode='ocelot', radius=15)
test_evaluator = val_evaluator
