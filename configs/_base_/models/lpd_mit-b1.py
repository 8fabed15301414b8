# LPD (spec sec. 2-4) on MiT-B1 with strides (4, 2, 2, 1) (output stride 16).
# The MiT-B1 is randomly initialised: no weights can be downloaded here. For the paper's setting
# convert the official ImageNet mit_b1.pth with mmseg's tools/model_converters/mit2mmseg.py and set
# model.backbone.init_cfg=dict(type='Pretrained', checkpoint='pretrain/mit_b1_mmseg.pth').
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # the reference's BCSS statistics, applied to the BGR array (bgr_to_rgb=False on purpose)
    mean=[170.318, 121.868, 180.089],
    std=[44.283, 57.540, 50.541],
    bgr_to_rgb=False,
    size_divisor=16,  # batches are padded to a multiple of 16 (a no-op for 224 / 112 px patches)
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='LPDSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='MixVisionTransformer',
        in_channels=3,
        embed_dims=64,
        num_stages=4,
        num_layers=[2, 2, 2, 2],
        num_heads=[1, 2, 5, 8],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 1],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1),
    head=dict(
        type='LearnablePrototypeCAMHead',
        num_classes=4,
        num_prototypes=10,
        in_channels=[64, 128, 320, 512],
        proto_dim=512,
        hidden_ratio=0.5,
        init_scale=1 / 0.07),
    loss_cls=dict(type='MultiStageBCELoss', stage_weights=(0.0, 0.1, 1.0, 1.0)),
    loss_sim=dict(type='PrototypeInfoNCELoss', temperature=0.07, activation_weight=5e-4,
                  loss_weight=0.1),
    loss_div=dict(type='PrototypeDiversityLoss', variant='jeffreys', loss_weight=0.5),
    # The reference's "MedCLIP" encoder is a Swin-T (ImageNet) + a randomly initialised 768->512
    # projection (MedCLIP weights are never loaded). Here: a seeded random Swin-T unless you set a
    # local checkpoint (e.g. a converted Swin-T / MedCLIP vision tower).
    frozen_encoder=dict(
        backbone=dict(
            type='SwinTransformer',
            embed_dims=96,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7,
            out_indices=(3, )),
        embed_dims=512,
        checkpoint=None),
    warmup_iters=3000,
    merge_train='mean',
    sim_mask_alpha=0.5,
    div_bg_score=0.2,
    div_prototypes='raw',
    test_cfg=dict(
        merge='max',
        fusion_stages=(1, 2, 3),
        fusion_weights=(0.3, 0.3, 0.4),
        bg_power=10,
        use_gt_labels=True,
        tta=True,
        crf=True))
