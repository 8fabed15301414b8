# The same detector with a Swin-T backbone: the only change is the model base
# (configs/_base_/models/heatmap_point_swin-t_fpn.py swaps `model.backbone` and the neck inputs).
_base_ = './heatmap_r50-fpn_300e_ocelot2023.py'
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
        convert_weights=True,
        init_cfg=None),
    neck=dict(in_channels=[96, 192, 384, 768]))
