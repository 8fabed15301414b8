# ProCNS default network (spec 2): PyMIC 2D U-Net (16..256 channels, trained from scratch) with a
# 1x1 classifier on the last decoder block, trained by SparseLabelSegmentor with the ProCNS loss.
# PRSA features: backbone outputs 3 (encoder level 4, 128 ch, stride 8, batch-level prototypes)
# and 7 (decoder block 3, 32 ch, stride 2, per-image prototypes); see configs/procns/README.md.
num_classes = 2
ignore_index = 255
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[0.0, 0.0, 0.0],
    std=[255.0, 255.0, 255.0],  # raw intensities in [0, 1], as the reference (and the PRSA kernel)
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=ignore_index,
    size_divisor=16)
model = dict(
    type='SparseLabelSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='PyMICUNet', in_channels=3, channels=(16, 32, 64, 128, 256),
                  dropout=(0.05, 0.1, 0.2, 0.3, 0.5)),
    decode_head=dict(
        type='FCNHead',
        in_channels=16,
        in_index=-1,
        channels=16,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        # unused in training (SparseLabelSegmentor applies `losses`); required by mmseg heads
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    losses=[dict(type='ProCNSLoss', num_classes=num_classes, ignore_index=ignore_index)],
    feature_indices=(3, 7),
    train_augment=dict(rot_flip_prob=0.5, rotate_prob=0.5, max_angle=45, image_mode='bilinear'),
    pseudo_label_store=dict(type='PseudoLabelStore', ema_alpha=0.2),
    augment_seed=0,
    ignore_index=ignore_index,
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
