# MIL counting, stage 1 (image-wise counter), reference defaults: ResNet-50, Adam lr 8e-5,
# wd 1e-4, batch 48, 50 epochs, CE + MSE (weights 1 / 1), validation every epoch (kappa over the
# 7 LYSTO categories, count MAE).
# Train: python tools/train.py configs/mil/mil-counter_r50_50e_lysto.py
_base_ = [
    '../_base_/models/mil_counter_r50.py', '../_base_/datasets/lysto_counts.py',
    '../_base_/seg_default_runtime.py'
]
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=8e-5, weight_decay=1e-4))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=50, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = []
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=2,
                    save_best='count/kappa', rule='greater'))
log_processor = dict(by_epoch=True)
