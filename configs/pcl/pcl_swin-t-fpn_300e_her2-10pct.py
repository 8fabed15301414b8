# Backbone swap example: PCL with an mmdet Swin-T + FPN instead of the papers' ViG-S. Only the
# model's backbone / neck / head network change; data, loss, schedule and metric are inherited.
# Random init; for a local checkpoint set
#   model.backbone.init_cfg = dict(type='Pretrained', checkpoint='/path/to/swin_tiny.pth')
_base_ = './pcl_vig-s_300e_her2-10pct.py'
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        convert_weights=True,
        init_cfg=None),
    neck=dict(type='FPN', in_channels=[96, 192, 384, 768], out_channels=128, num_outs=4),
    head=dict(
        _delete_=True,
        type='HeatmapPointHead',
        num_classes=2,
        in_channels=128,
        in_index=(0, 1, 2, 3),
        channels=64,
        upsample_channels=(32, 16),
        input_stride=4,
        embed_index=3,  # stride-32 nodes, as with ViG-S
        embed_dims=70,
        codec={{_base_.model.head.codec}},
        loss_heatmap={{_base_.model.head.loss_heatmap}}))
