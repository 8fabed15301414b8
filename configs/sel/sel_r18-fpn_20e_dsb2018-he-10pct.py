# SEL on the bundled DSB2018 H&E tiles (one class), 10% annotated, appearance-group split.
# Only the loss differs from configs/pointdet/heatmap_r18-fpn_20e_dsb2018-he-10pct.py.
_base_ = '../pointdet/heatmap_r18-fpn_20e_dsb2018-he-10pct.py'
model = dict(
    head=dict(
        loss_heatmap=dict(
            _delete_=True,
            type='SemanticEnergyLoss',
            ce_weight=2.0,
            detach_energy=False,
            sfl=dict(type='StretchedFeatureLoss', tau=10.0, weight_mode='sel',
                     loss_weight=0.05))))
