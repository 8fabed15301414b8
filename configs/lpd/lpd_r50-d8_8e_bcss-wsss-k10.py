# Backbone swap example: LPD on mmseg's ResNet-50-D (ResNetV1c) with dilated stages 3-4 (output
# stride 8). Stage channels 256/512/1024/2048 != proto_dim 512, so L_div uses the stage-4
# projected prototypes (div_prototypes='projected'); L_sim keeps the raw 512-d prototypes.
_base_ = './lpd_mit-b1_8e_bcss-wsss-k10.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetV1c',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    head=dict(in_channels=[256, 512, 1024, 2048]),
    div_prototypes='projected')
