# PCL (all three EndoNuke classes: stroma, epithelium, other) on the bundled EndoNuke expert points,
# 10% of the nuclei of each training tile annotated: the job `make demo` runs. Only the loss
# differs from configs/pointdet/heatmap_r18-fpn_20e_endonuke-10pct.py.
_base_ = '../pointdet/heatmap_r18-fpn_20e_endonuke-10pct.py'
model = dict(
    head=dict(
        loss_heatmap=dict(
            _delete_=True,
            type='PrototypeCalibratedLoss',
            ce_weight=2.0,
            alpha=0.2,
            momentum=0.01,
            prototype_similarity='cosine',
            detach_energy=False,
            sfl=dict(type='StretchedFeatureLoss', tau=3.0, weight_mode='pcl', loss_weight=0.05),
            exclusive=dict(type='ExclusiveLoss', loss_weight=0.2))))
