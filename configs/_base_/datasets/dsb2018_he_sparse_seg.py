# DSB2018 H&E-type nuclei tiles (data/real/dsb2018_he: 30 bundled tiles, 256x320, real expert
# instance masks -> class "nucleus"); sparse **point** labels derived on the fly by a seeded
# generator (one click per nucleus at its most interior pixel, as many background clicks, 2 px
# disks). Split: data/real/splits/dsb2018_he_random.json (15 train / 5 val / 10 test tiles).
# Full copy (75 tiles): --cfg-options with data_root=/path/to/dsb2018_he and a split made by
# tools/dataset_converters/make_real_splits.py (see configs/procns/README.md).
dataset_type = 'SparseSegDataset'
data_root = 'data/real/dsb2018_he/'
split_file = '../splits/dsb2018_he_random.json'
seg_num_classes = 2
metainfo = dict(classes=('background', 'nucleus'), palette=[[0, 0, 0], [255, 64, 64]])
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
             'flip', 'flip_direction', 'reduce_zero_label', 'sample_idx', 'sample_id', 'crop_box',
             'volume_id')
label_seed = 0
crop_size = (96, 96)
sparse_labels = dict(type='GenerateSparseLabels', kind='point', num_classes=seg_num_classes,
                     seed=label_seed, radius=2, margin=2)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSparseSegAnnotations', num_classes=seg_num_classes, target='sparse',
         mask_mode='instance'),
    sparse_labels,
    dict(type='SparseSegRandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
# whole training images, no random transform: EMA refresh / ANPM passes of PseudoLabelHook
refresh_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSparseSegAnnotations', num_classes=seg_num_classes, target='full',
         mask_mode='instance'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
common = dict(type=dataset_type, data_root=data_root, ann_file=split_file, metainfo=metainfo,
              img_template='{id}/image.png', mask_template='{id}/labels.png')
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**common, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**common, split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**common, split='test', test_mode=True, pipeline=test_pipeline))
val_evaluator = dict(type='DiceHD95Metric', empty='penalty')
test_evaluator = val_evaluator
