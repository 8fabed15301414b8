# SEL paper schedule (spec section 5): Adam lr 1e-2, 500 epochs, batch 2 (set in the dataset config).
# The reference steps MultiStepLR([50, 150]) once per *iteration* (trap T12): lr is 1e-2 for
# iterations 0-49, 1e-3 for 50-149 and 1e-4 afterwards. `by_epoch=False` reproduces that; to use
# epoch milestones instead set `param_scheduler = [dict(..., by_epoch=True)]` in your config.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=0.01, betas=(0.9, 0.999), weight_decay=0))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[50, 150], gamma=0.1)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=500, val_interval=50)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
