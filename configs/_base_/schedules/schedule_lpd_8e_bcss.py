# LPD paper schedule: 8 epochs of BCSS-WSSS train (23,422 patches, batch 10) = 18,744 iterations;
# AdamW lr 5e-5 / wd 1e-3 on all parameters; poly (power 1) decay, no LR warm-up; validation every
# epoch (2,343 iterations); keep the best mIoU. The reference trains with CUDA AMP: add --amp.
max_iters = 18744
val_interval = 2343
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3))
param_scheduler = [
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
