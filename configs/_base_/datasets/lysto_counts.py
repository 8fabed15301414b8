# LYSTO counting data as distributed (training.h5: x 299x299x3 RGB uint8, y counts, organ).
# Download from https://lysto.grand-challenge.org/ and put the file at data/lysto/training.h5
# (check it with: python tools/mil/check_lysto.py data/lysto/training.h5).
# Split: the reference's 10-fold rule, image i (0-based) is val iff (i + 1) % 10 == 0.
data_root = 'data/lysto/'
count_dataset = dict(type='LystoH5Dataset', data_root=data_root, ann_file='training.h5',
                     img_size=(299, 299), split_every=10)

train_pipeline = [
    dict(type='LoadCountImage'),
    dict(type='CountRandomFlip', prob=0.5),  # the reference's x4 flip copies, drawn at random
    dict(type='PackCountInputs'),
]
test_pipeline = [dict(type='LoadCountImage'), dict(type='PackCountInputs')]

train_dataloader = dict(
    batch_size=48,
    num_workers=4,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(**count_dataset, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(**count_dataset, split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CountKappaMetric')
test_evaluator = val_evaluator
