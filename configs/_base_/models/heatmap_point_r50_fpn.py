# Heatmap point detector: ResNet-50 + FPN + HeatmapPointHead with the plain soft cross-entropy.
# Swap the backbone by replacing `model.backbone` (and `model.neck.in_channels`) in your config;
# see configs/pointdet/heatmap_swin-t-fpn_300e_ocelot2023.py.
# Weights are randomly initialised. To start from a local checkpoint (no downloads needed), set
#   model.backbone.init_cfg = dict(type='Pretrained', checkpoint='/path/to/resnet50.pth')
num_classes = 2
codec = dict(
    type='PointHeatmapCodec',
    num_classes=num_classes,
    radius=15,  # Gaussian disc radius in pixels (15 px = 3 um at 0.2 mpp), sigma = radius / 2
    score_thr=0.5,
    min_distance=6)
model = dict(
    type='PointDetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=128, num_outs=4),
    head=dict(
        type='HeatmapPointHead',
        num_classes=num_classes,
        in_channels=128,
        in_index=(0, 1, 2, 3),
        channels=64,
        upsample_channels=(32, 16),
        input_stride=4,
        embed_index=3,  # stride-32 nodes, as in the papers (32x32 nodes for a 1024 px patch)
        embed_dims=70,
        codec=codec,
        loss_heatmap=dict(type='SoftCrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
