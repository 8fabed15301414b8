# HER2 IHC point dataset of the SEL / PCL papers (in-house; see docs/datasets.md "HER2").
# Layout: data/her2/img/{train,val,test}/*.png and data/her2/ground_truth/{split}/*.csv
# (x,y,class with class tumor/other or 1/2), made with tools/dataset_converters/her2_json_to_csv.py.
#
# Sparse annotation is simulated online by SparsePointSampling (reproducible per image file name).
# It must come before the geometric transforms. Change the ratio in your config with e.g.
#   train_dataloader = dict(dataset=dict(pipeline=[...]))  or use a frozen subset:
#   train_dataloader = dict(dataset=dict(ann_dir='ground_truth_10pct'))
# Reference parity: the papers trained on whole 1024x1024 patches without augmentation; drop
# PointRandomCrop / PointRandomFlip / PointRandomRotate90 for that.
dataset_type = 'Her2PointDataset'
data_root = 'data/her2/'
classes = ('tumor', 'other')
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
    batch_size=2,  # SEL: 2, PCL: 8 (spec section 0); set in the method config
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        metainfo=dict(classes=classes),
        pipeline=train_pipeline))
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
        metainfo=dict(classes=classes),
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
        metainfo=dict(classes=classes),
        test_mode=True,
        pipeline=test_pipeline))

# Reference protocol (spec section 7): per-image P/R averaged over images, strict d < 15 px.
val_evaluator = dict(type='PointF1Metric', mode='reference', radius=15)
test_evaluator = val_evaluator
