# MIL counting, stage 2 (tile instance classifier), reference defaults: 32-px tiles, stride 20
# (225 tiles per 299-px image), k = count * 1 positives, 30 hard negatives per zero-count image,
# positives : negatives = 1 : 2, frozen encoder from stage 1 (load_from), Adam lr 5e-4, wd 1e-4,
# 30 epochs. Every epoch MILTopKSamplingHook scores all tiles (fixed order) and re-selects.
# Train: python tools/train.py configs/mil/mil-tile_r50_30e_lysto.py \
#            --cfg-options load_from=work_dirs/<stage 1>/best_count_kappa_epoch_N.pth
_base_ = ['./mil-counter_r50_50e_lysto.py']
model = dict(
    _delete_=True,
    type='MILTileClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.model.backbone}},
    in_channels=2048,
    tile_size=32,
    tile_stride=20,
    k_per_pos=1,
    k_neg=30,
    pos_neg_ratio=0.5,
    freeze_backbone=True,
    tile_batch=4096,
    loss=dict(type='MILTileLoss', gamma=1.0))
# the selection is computed on the images the pipeline returns: no random augmentation here
train_dataloader = dict(batch_size=48, dataset=dict(pipeline={{_base_.test_pipeline}}))
custom_hooks = [dict(type='MILTopKSamplingHook', batch_size=16)]
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=5e-4, weight_decay=1e-4))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=30, val_interval=1000)
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=5,
                                     max_keep_ckpts=1, save_best=None, save_last=True))
