# MIL counting stage 1 on the bundled EndoNuke tiles (data/real/endonuke, CC BY 4.0): the count of
# a tile is its number of expert *epithelium* points (0-68 per tile; 20 of 50 tiles have none),
# the only label used for training. Split data/real/splits/endonuke_block.json (test = block D,
# another acquisition batch, never trained on). CPU-scale experiment: ResNet-18 at half width
# (stem/base 32 channels), batch 4, 100 epochs; ResNet-50 remains the documented default.
_base_ = ['./mil-counter_r50_50e_lysto.py']
backbone = dict(type='ResNet', depth=18, stem_channels=32, base_channels=32, out_indices=(3, ),
                norm_cfg=dict(type='BN', requires_grad=True), style='pytorch')
model = dict(backbone=dict(_delete_=True, **backbone), in_channels=256)
points = dict(type='EndoNukePointDataset', data_root='data/real/endonuke/',
              split_file='data/real/splits/endonuke_block.json')
count_classes = ('epithelium', )
train_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
    dataset=dict(
        _delete_=True, type='PointCountDataset',
        points_dataset=dict(**points, split='train'),
        count_classes=count_classes, pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    batch_size=8, num_workers=0,
    dataset=dict(
        _delete_=True, type='PointCountDataset',
        points_dataset=dict(**points, split='val'),
        count_classes=count_classes, test_mode=True,
        pipeline={{_base_.test_pipeline}}))
test_dataloader = dict(
    batch_size=8, num_workers=0,
    dataset=dict(
        _delete_=True, type='PointCountDataset',
        points_dataset=dict(**points, split='test'),
        count_classes=count_classes, test_mode=True,
        pipeline={{_base_.test_pipeline}}))
optim_wrapper = dict(optimizer=dict(lr=1e-3))  # short schedule from scratch: larger step
train_cfg = dict(max_epochs=100)
default_hooks = dict(logger=dict(interval=7))
