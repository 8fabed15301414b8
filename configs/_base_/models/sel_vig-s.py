# SEL (Xu et al., BIBM 2023): isotropic ViG-S + the paper's decoder and node branch, trained with
# the Semantic Energy Loss (2 * energy-weighted CE + 0.05 * SFL(tau=10)).
# Spec: input normalised to [-1, 1] from RGB (mean = std = 127.5), 32 px nodes (stride 32),
# inference on channel 1 with prob >= 0.7, peak_local_max(min_distance=6, exclude_border=3).
num_classes = 1  # 2 output channels: background, tumour cell
codec = dict(
    type='PointHeatmapCodec',
    num_classes=num_classes,
    radius=15,
    score_thr=0.7,
    min_distance=6,
    exclude_border=3)
model = dict(
    type='PointDetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='IsotropicViG',
        embed_dims=280,
        num_blocks=16,
        k=9,
        pos_embed_size=(32, 32),
        init_cfg=None),
    head=dict(
        type='ViGHeatmapPointHead',
        num_classes=num_classes,
        in_channels=280,
        num_blocks=16,
        embed_dims=70,
        use_decoder_taps=False,  # SEL code: node features from the backbone blocks only (T20)
        decoder_act='relu',      # reference code (T19); the paper's text says GELU
        bn_before_softmax=True,
        codec=codec,
        loss_heatmap=dict(
            type='SemanticEnergyLoss',
            ce_weight=2.0,
            detach_energy=False,
            sfl=dict(type='StretchedFeatureLoss', tau=10.0, weight_mode='sel',
                     loss_weight=0.05))),
    test_cfg=dict(mode='whole'))
