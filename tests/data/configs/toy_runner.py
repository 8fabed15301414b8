# A tiny, self-contained runner config for the tool tests (tests/test_tools.py): a toy regressor
# on 8 random images, 4 iterations, checkpoints at iterations 2 and 4. `protocal_toy` lives in
# tests/data (the tests put it on PYTHONPATH). The nccl backend is deliberate: on a CPU machine
# protocal.utils.adapt_cfg_to_device must switch it to gloo.
default_scope = 'mmdet'
custom_imports = dict(imports=['protocal', 'protocal_toy'], allow_failed_imports=False)

model = dict(type='ToyRegressor')
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=False),
    dataset=dict(type='ToyRegressionDataset', length=8))
test_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ToyRegressionDataset', length=8))
test_evaluator = dict(type='ToyMAEMetric')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=0.01))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=1000)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='ToyRankReportHook')]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
