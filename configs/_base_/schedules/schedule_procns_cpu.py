# Short CPU schedule of the ProCNS experiments (the paper: 30k-60k iterations, batch 12):
# SGD lr 0.01, momentum 0.9, weight decay 1e-4, poly(0.9) decay (baseline / WSL4MIS rule; the
# reference's shifted poly is not reproduced), iteration-based.
max_iters = 300
val_interval = 50
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
