# DSB2018 (BBBC038v1, CC0) brightfield H&E-type tiles, points = centroids of the expert instance
# masks, one class ('nucleus'). Bundled subset: data/real/dsb2018_he (30 tiles of 320x256 px,
# 1,307 nuclei). Splits: data/real/splits/dsb2018_he_group.json (test = the whole "white" appearance
# group) or dsb2018_he_random.json (random tiles). Tile 8f27ebc74164 is only partly annotated and
# stays in train in both (recall only). See docs/datasets.md.
dataset_type = 'DSB2018PointDataset'
data_root = 'data/real/dsb2018_he/'
split_file = 'data/real/splits/dsb2018_he_group.json'
classes = ('nucleus', )
metainfo = dict(classes=classes, palette=[(0, 114, 178)])
sparse_ratio = 0.1
sparse_seed = 0

train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='PointRandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PointRandomRotate90', prob=0.5),
    dict(type='PackPointDetInputs'),
]
test_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='PackPointDetInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split_file=split_file,
        split='train',
        metainfo=metainfo,
        sparse_ratio=sparse_ratio,
        sparse_seed=sparse_seed,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split_file=split_file,
        split='val',
        metainfo=metainfo,
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split_file=split_file,
        split='test',
        metainfo=metainfo,
        test_mode=True,
        pipeline=test_pipeline))
# DSB nuclei here are 15-40 px across: match within 8 px (as in data/README's classical check)
val_evaluator = dict(type='PointF1Metric', mode='ocelot', radius=8)
test_evaluator = val_evaluator
