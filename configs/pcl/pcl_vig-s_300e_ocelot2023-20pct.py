# PCL on OCELOT 2023 with 20% of the cells annotated; everything else as the 10% config.
_base_ = './pcl_vig-s_300e_ocelot2023-10pct.py'
train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='SparsePointSampling', ratio=0.2, seed=0, mode='bernoulli',
         keep_first_per_class=True),
    dict(type='PackPointDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
