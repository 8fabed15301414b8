# ProCNS on EBHI-Seg from block labels (one square block inside the lesion and one inside the
# background, side 0.3 * sqrt(region area)); otherwise identical to the scribble config.
_base_ = ['./procns_unet-c8_300it_ebhi_scribble.py']
sparse_labels = dict(type='GenerateSparseLabels', kind='block', num_classes=2, seed=0,
                     blocks_per_class=1, block_ratio=0.3)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSparseSegAnnotations', num_classes=2, target='sparse', mask_mode='threshold',
         threshold=128),
    sparse_labels,
    dict(type='SparseSegRandomCrop', crop_size=(96, 96)),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
