# Bundled demo data (data/demo/ihc_points): four 256x256 tiles of scikit-image's IHC image
# (3 train, 1 val), nuclei as points of two classes derived by colour deconvolution
# (tools/dataset_converters/ihc_weak_labels.py; see data/README.md).
# Training sees only a sparse subset of the points (`sparse_ratio`, same subset every epoch);
# evaluation always uses every point. `test_dataloader` evaluates on the *training* tiles with the
# same sparse subset marked, so the metric's `unannotated_recall` says how many of the cells that
# were never labelled the model recovers.
dataset_type = 'PointDataset'
data_root = 'data/demo/ihc_points/'
classes = ('dab_positive', 'dab_negative')
metainfo = dict(classes=classes, palette=[(160, 82, 45), (65, 105, 225)])
sparse_ratio = 0.1
sparse_seed = 0

train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='SparsePointSampling', ratio=sparse_ratio, seed=sparse_seed, mode='fixed_count'),
    dict(type='PointRandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PointRandomRotate90', prob=0.5),
    dict(type='PackPointDetInputs'),
]
test_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='PackPointDetInputs'),
]
# The training tiles with the training subset marked as annotated (for unannotated recall).
sparse_eval_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='SparsePointSampling', ratio=sparse_ratio, seed=sparse_seed, mode='fixed_count'),
    dict(type='PackPointDetInputs'),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type='RepeatDataset',
        times=8,
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            metainfo=metainfo,
            data_prefix=dict(img='images/train', ann='annotations/train'),
            ann_format='csv',
            pipeline=train_pipeline)))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        data_prefix=dict(img='images/val', ann='annotations/val'),
        ann_format='csv',
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
        metainfo=metainfo,
        data_prefix=dict(img='images/train', ann='annotations/train'),
        ann_format='csv',
        test_mode=True,
        pipeline=sparse_eval_pipeline))
# radius 6 px ~ half a nucleus diameter here (15 px at 0.2 mpp in the papers)
val_evaluator = dict(type='PointF1Metric', mode='ocelot', radius=6)
test_evaluator = val_evaluator
