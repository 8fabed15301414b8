# BCSS-WSSS (Han et al., WSSS-Tissue release) as LPD / PBIP read it. See configs/lpd/README.md for
# the download and tools/dataset_converters/check_bcss_wsss.py to validate a copy.
# Layout: data/BCSS-WSSS/{train/*[abcd].png, val|valid/{img,mask}, test/{img,mask}}
dataset_type = 'BCSSWSSSDataset'
data_root = 'data/BCSS-WSSS'

train_pipeline = [
    dict(type='LoadImageFromFile'),  # BGR, like the reference's cv2.imread
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='SegRandomRotate90', prob=0.5),
    dict(type='PackWSSSInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # palette masks 0=TUM 1=STR 2=LYM 3=NEC 4=BACK; the image label is derived from the mask
    dict(type='LoadWSSSAnnotations', mask_mode='index', label_from_mask=True),
    dict(type='PackWSSSInputs')
]
train_dataloader = dict(
    batch_size=10,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline))
val_evaluator = dict(type='WSSSIoUMetric', bg_index=4)
test_evaluator = val_evaluator
