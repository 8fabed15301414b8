# Small heatmap point detector for CPU demos and tests: ResNet-18 + FPN(64) + HeatmapPointHead.
# Geometry is set for the bundled demo data (nuclei of about 14 px in diameter):
# Gaussian radius 6 px, peaks at least 4 px apart, node embeddings at stride 8 (one node is an
# 8x8 px cell, i.e. about one nucleus; the papers use 32 px nodes for 1024 px patches at 0.2 mpp).
num_classes = 2
codec = dict(
    type='PointHeatmapCodec',
    num_classes=num_classes,
    radius=6,
    score_thr=0.1,  # the PCL paper's threshold: sparse training leaves low peak probabilities
    min_distance=4)
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
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=64, num_outs=4),
    head=dict(
        type='HeatmapPointHead',
        num_classes=num_classes,
        in_channels=64,
        in_index=(0, 1, 2, 3),
        channels=64,
        upsample_channels=(32, 16),
        input_stride=4,
        embed_index=1,  # FPN level 1 = stride 8
        embed_dims=32,
        embed_hidden=64,
        codec=codec,
        loss_heatmap=dict(type='SoftCrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
