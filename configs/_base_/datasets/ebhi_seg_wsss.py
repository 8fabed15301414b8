# EBHI-Seg as a WSSS dataset: the image-level label is the class folder, the expert mask (>= 128)
# is used for evaluation only. Bundled subset: data/real/ebhi_seg (36 images, 6 per class);
# the full 96-image copy: --cfg-options data_root=/path/to/ebhi_seg and the ebhi_seg96_* splits.
# Splits are case-disjoint (tools/dataset_converters/make_wsss_split.py).
# "Background" = mask < 128: everything outside the annotated lesion/tissue region of the image's
# class (other mucosa, stroma, lumen, glass), NOT only empty glass as in BCSS-WSSS.
dataset_type = 'ImageLabelFolderDataset'
data_root = 'data/real/ebhi_seg'
split_prefix = 'data/real/splits/ebhi_seg'
metainfo = dict(
    classes=('Adenocarcinoma', 'High-grade IN', 'Low-grade IN', 'Normal', 'Polyp',
             'Serrated adenoma', 'Background'),
    palette=[[205, 51, 51], [255, 127, 14], [255, 215, 0], [0, 200, 0], [65, 105, 225],
             [148, 103, 189], [255, 255, 255]])
img_scale = (224, 224)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='SegRandomRotate90', prob=0.5),
    dict(type='PackWSSSInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    # binary expert mask of the image's one class: >= 128 -> class, else Background
    dict(type='LoadWSSSAnnotations', mask_mode='binary', threshold=128),
    dict(type='PackWSSSInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 split_file=split_prefix + '_train.txt', mask_name=None, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 split_file=split_prefix + '_val.txt', pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 split_file=split_prefix + '_test.txt', pipeline=test_pipeline))
val_evaluator = dict(type='WSSSIoUMetric', bg_index=-1)
test_evaluator = val_evaluator
