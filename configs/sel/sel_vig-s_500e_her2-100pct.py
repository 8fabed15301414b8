# SEL on HER2 with 100% of the tumour cells annotated; everything else as the 10% config.
_base_ = './sel_vig-s_500e_her2-10pct.py'
train_pipeline = [
    dict(type='LoadHistologyImage'),
    dict(type='PackPointDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
