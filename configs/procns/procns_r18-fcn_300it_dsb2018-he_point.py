# Backbone swap: ProCNS with a stock mmseg ResNet-18 (V1c, dilated to output stride 8 as mmseg's
# FCN-r18-d8; from scratch: no weights can be downloaded here) + FCN decode head on stage 4 instead
# of the U-Net. PRSA features: ResNet stage 2 (stride 8, batch-level prototypes) and stage 1
# (stride 4, per-image prototypes). Inputs are normalised with
# ImageNet statistics; the PRSA kernel still sees the raw [0, 1] image (the segmentor undoes the
# normalisation).
_base_ = ['./procns_unet-c8_300it_dsb2018-he_point.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='ResNetV1c',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        type='FCNHead', in_channels=512, in_index=3, channels=128, num_convs=2,
        concat_input=False, dropout_ratio=0.1, num_classes=2, norm_cfg=norm_cfg,
        align_corners=False),
    feature_indices=(1, 0))
