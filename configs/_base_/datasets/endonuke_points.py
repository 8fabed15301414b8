# EndoNuke IHC tiles with expert points (stroma / epithelium / other; CC BY 4.0, Naumov et al.,
# Data 2022, doi:10.3390/data7060075). Bundled subset: data/real/endonuke (50 tiles of 200x200 px,
# 4,775 points); fixed split data/real/splits/endonuke_block.json (test = acquisition block D,
# never seen in training; val = 22% of the other blocks). See docs/datasets.md.
#
# Sparse annotation is frozen by the dataset (`sparse_ratio`, `sparse_seed`): the same points of
# each tile are annotated for every method and every class view. Evaluation uses every point.
# The full data: convert with tools/dataset_converters/endonuke_to_points.py and point
# `data_root` / `split_file` at the result.
dataset_type = 'EndoNukePointDataset'
data_root = 'data/real/endonuke/'
split_file = 'data/real/splits/endonuke_block.json'
classes = ('stroma', 'epithelium', 'other')
metainfo = dict(classes=classes, palette=[(0, 114, 178), (230, 159, 0), (204, 121, 167)])
sparse_ratio = 0.1
sparse_seed = 0

train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='CropToValidRegion'),  # tiles 741-744: drop the transparent (black) bottom rows
    dict(type='PointRandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PointRandomRotate90', prob=0.5),
    dict(type='PackPointDetInputs'),
]
test_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='CropToValidRegion'),
    dict(type='PackPointDetInputs'),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=0,  # in-process loading: identical batches on every run
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
# nuclei are about 8-14 px across in these 200x200 tiles: match within 6 px (half a nucleus)
val_evaluator = dict(type='PointF1Metric', mode='ocelot', radius=6)
test_evaluator = val_evaluator
