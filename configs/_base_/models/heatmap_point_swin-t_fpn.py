# The same point detector with a Swin-T backbone: only `model.backbone` and the neck's input
# channels change. Random init; for a local checkpoint set
#   model.backbone.init_cfg = dict(type='Pretrained', checkpoint='/path/to/swin_tiny.pth')
_base_ = './heatmap_point_r50_fpn.py'
model = dict(
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
        with_cp=False,
        convert_weights=True,
        init_cfg=None),
    neck=dict(in_channels=[96, 192, 384, 768]))
