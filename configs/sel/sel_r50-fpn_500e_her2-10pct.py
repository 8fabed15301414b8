# Backbone swap example for SEL: mmdet ResNet-50 + FPN + HeatmapPointHead instead of ViG-S, with
# the same Semantic Energy Loss, data, schedule and metric (random init; see README for a local
# checkpoint).
_base_ = './sel_vig-s_500e_her2-10pct.py'
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        style='pytorch',
        init_cfg=None),
    neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=128, num_outs=4),
    head=dict(
        _delete_=True,
        type='HeatmapPointHead',
        num_classes=1,
        in_channels=128,
        embed_index=3,
        embed_dims=70,
        codec={{_base_.model.head.codec}},
        loss_heatmap={{_base_.model.head.loss_heatmap}}))
