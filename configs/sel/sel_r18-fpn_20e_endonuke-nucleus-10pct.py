# SEL (single foreground class, as in the paper: all EndoNuke nuclei as "nucleus") on the bundled
# EndoNuke expert points, 10% annotated. Only the loss differs from
# configs/pointdet/heatmap_r18-fpn_20e_endonuke-nucleus-10pct.py.
_base_ = '../pointdet/heatmap_r18-fpn_20e_endonuke-nucleus-10pct.py'
model = dict(
    head=dict(
        loss_heatmap=dict(
            _delete_=True,
            type='SemanticEnergyLoss',
            ce_weight=2.0,
            detach_energy=False,
            sfl=dict(type='StretchedFeatureLoss', tau=10.0, weight_mode='sel',
                     loss_weight=0.05))))
