# PCL on the bundled demo data with 10% of the points annotated (CPU-sized): the job `make demo`
# runs. Only the loss differs from configs/pointdet/heatmap_r18-fpn_40e_ihc-demo-10pct.py.
_base_ = '../pointdet/heatmap_r18-fpn_40e_ihc-demo-10pct.py'
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
