# MIL counting stage 1: image-wise counter on a ResNet-50 encoder (mmseg ResNet, torchvision
# layout); GAP+GMP -> 7-category classifier + count regressor. Weights start from random
# initialisation (nothing is downloaded); to start from ImageNet weights set
# model.backbone.init_cfg = dict(type='Pretrained', checkpoint='/path/resnet50.pth').
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='ImgDataPreprocessor',
    mean=[123.675, 116.28, 103.53],  # ImageNet statistics on RGB
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True)
model = dict(
    type='MILCounter',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNet', depth=50, out_indices=(3, ), norm_cfg=norm_cfg, norm_eval=False,
        style='pytorch'),
    in_channels=2048,
    num_categories=7,
    hidden=64,
    loss=dict(type='MILCountLoss', alpha=1.0, beta=1.0),
    cls_limit=False)
