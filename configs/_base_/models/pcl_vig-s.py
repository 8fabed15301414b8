# PCL: isotropic ViG-S + decoder with side taps, trained with the Prototype-Calibrated Loss
# (2 * prototype-calibrated CE + 0.05 * SFL(tau=3) + 0.2 * Exclusive Loss), EMA prototypes
# (momentum 0.01, alpha 0.2). Inference per class with prob >= 0.1,
# peak_local_max(min_distance=12, exclude_border=6), no cross-class suppression (spec section 6).
_base_ = './sel_vig-s.py'
num_classes = 2  # 3 output channels: background, class 1 (tumour), class 2 (other cell)
codec = dict(
    type='PointHeatmapCodec',
    num_classes=num_classes,
    radius=15,
    score_thr=0.1,
    min_distance=12,
    exclude_border=6,
    cross_class_nms=False)
model = dict(
    head=dict(
        num_classes=num_classes,
        use_decoder_taps=True,
        codec=codec,
        loss_heatmap=dict(
            _delete_=True,
            type='PrototypeCalibratedLoss',
            ce_weight=2.0,
            alpha=0.2,
            momentum=0.01,
            prototype_similarity='cosine',  # raw cosine as in the reference (T9)
            detach_energy=False,
            sfl=dict(type='StretchedFeatureLoss', tau=3.0, weight_mode='pcl', loss_weight=0.05),
            exclusive=dict(type='ExclusiveLoss', loss_weight=0.2))))
