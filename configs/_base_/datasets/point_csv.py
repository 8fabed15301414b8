# Your own point-annotated images (see docs/datasets.md "Your own data").
# Layout (paired by file stem):
#   data/my_cells/images/{train,val,test}/<name>.png|jpg|tif
#   data/my_cells/annotations/{train,val,test}/<name>.csv   (x,y,class; or .geojson from QuPath)
# Set `classes` to your class names; CSV class columns may hold these names or 1-based ids
# (class_id_base=1), and `class_map` renames or drops (None) classes found in the files, e.g.
#   class_map={'Tumor': 'tumor', 'Stroma': 'other', 'Ignore': None}
# If you know the resolution, set mpp (microns per pixel) so that radii can be checked.
dataset_type = 'PointDataset'
data_root = 'data/my_cells/'
classes = ('tumor', 'other')
backend_args = None

train_pipeline = [
    dict(type='LoadHistologyImage', backend_args=backend_args),
    # simulate sparse annotation (ratio=1.0: use all points); keep it before geometric transforms
    dict(type='SparsePointSampling', ratio=0.1, seed=0, mode='bernoulli'),
    dict(type='PointRandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PointRandomRotate90', prob=0.5),
    dict(type='PackPointDetInputs')
]
test_pipeline = [
    dict(type='LoadHistologyImage', backend_args=backend_args),
    dict(type='PackPointDetInputs')
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img='images/train', ann='annotations/train'),
        ann_format='auto',
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
        data_prefix=dict(img='images/val', ann='annotations/val'),
        ann_format='auto',
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
        data_prefix=dict(img='images/test', ann='annotations/test'),
        ann_format='auto',
        metainfo=dict(classes=classes),
        test_mode=True,
        pipeline=test_pipeline))

# Dataset-level P/R/F1 on all ground-truth points, greedy matching within `radius` pixels
# (15 px = 3 um at 0.2 um/px; scale it to your resolution).
val_evaluator = dict(type='PointF1Metric', mode='ocelot', radius=15)
test_evaluator = val_evaluator
