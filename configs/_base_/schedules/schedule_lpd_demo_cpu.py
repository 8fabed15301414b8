# Short CPU schedule for the EBHI-Seg demo / experiments (random-init backbone, so a larger LR
# than the paper's 5e-5 for an ImageNet-initialised one). Same poly decay and AdamW as the paper.
max_iters = 300
val_interval = 300
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
