# SEL on the bundled demo data with 10% of the points annotated (CPU-sized).
# Only the loss differs from configs/pointdet/heatmap_r18-fpn_40e_ihc-demo-10pct.py. The semantic
# energy is class-agnostic (SEL is a 2-class method), so both demo classes share it.
_base_ = '../pointdet/heatmap_r18-fpn_40e_ihc-demo-10pct.py'
model = dict(
    head=dict(
        loss_heatmap=dict(
            _delete_=True,
            type='SemanticEnergyLoss',
            ce_weight=2.0,
            detach_energy=False,
            sfl=dict(type='StretchedFeatureLoss', tau=10.0, weight_mode='sel',
                     loss_weight=0.05))))
