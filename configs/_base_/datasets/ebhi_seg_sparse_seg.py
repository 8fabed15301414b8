# EBHI-Seg colorectal H&E patches (data/real/ebhi_seg: 36 bundled 224x224 images, 6 per class,
# expert masks binarised at >= 128 -> class "lesion"); sparse **scribble** labels derived on the fly
# by the seeded skeleton generator (set `sparse_labels` to kind='block' for blocks).
# Case-disjoint split shared with LPD: data/real/splits/ebhi_seg_{train,val,test}.txt (24/6/6).
dataset_type = 'SparseSegDataset'
data_root = 'data/real/ebhi_seg/'
seg_num_classes = 2
metainfo = dict(classes=('background', 'lesion'), palette=[[0, 0, 0], [255, 64, 64]])
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
             'flip', 'flip_direction', 'reduce_zero_label', 'sample_idx', 'sample_id', 'crop_box',
             'volume_id')
label_seed = 0
crop_size = (96, 96)
sparse_labels = dict(type='GenerateSparseLabels', kind='scribble', num_classes=seg_num_classes,
                     seed=label_seed)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSparseSegAnnotations', num_classes=seg_num_classes, target='sparse',
         mask_mode='threshold', threshold=128),
    sparse_labels,
    dict(type='SparseSegRandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
refresh_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSparseSegAnnotations', num_classes=seg_num_classes, target='full',
         mask_mode='threshold', threshold=128),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
common = dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
              img_template='{id}/image.png', mask_template='{id}/mask.png')
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**common, ann_file='../splits/ebhi_seg_train.txt', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**common, ann_file='../splits/ebhi_seg_val.txt', test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**common, ann_file='../splits/ebhi_seg_test.txt', test_mode=True,
                 pipeline=test_pipeline))
val_evaluator = dict(type='DiceHD95Metric', empty='penalty')
test_evaluator = val_evaluator
