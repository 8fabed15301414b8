# The plain baseline with 10% of the OCELOT cells annotated (compare with
# configs/pcl/pcl_vig-s_300e_ocelot2023-10pct.py and the SEL/PCL losses on this model).
_base_ = './heatmap_r50-fpn_300e_ocelot2023.py'
train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='SparsePointSampling', ratio=0.1, seed=0, mode='bernoulli',
         keep_first_per_class=True),
    dict(type='PointRandomCrop', crop_size=(512, 512)),
    dict(type='PointRandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PointRandomRotate90', prob=0.5),
    dict(type='PackPointDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
