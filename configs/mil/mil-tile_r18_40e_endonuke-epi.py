# MIL counting stage 2 on the bundled EndoNuke tiles (epithelium counts); see
# mil-counter_r18_100e_endonuke-epi.py. Nuclei are ~8-14 px across in these 200-px tiles, so the
# tiles are 16 px with stride 8 (576 tiles per image) instead of LYSTO's 32 / 20.
_base_ = ['./mil-tile_r50_30e_lysto.py']
backbone = dict(type='ResNet', depth=18, stem_channels=32, base_channels=32, out_indices=(3, ),
                norm_cfg=dict(type='BN', requires_grad=True), style='pytorch')
model = dict(backbone=dict(_delete_=True, **backbone), in_channels=256, tile_size=16,
             tile_stride=8, k_per_pos=1, k_neg=30)
points = dict(type='EndoNukePointDataset', data_root='data/real/endonuke/',
              split_file='data/real/splits/endonuke_block.json')
train_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
    dataset=dict(
        _delete_=True, type='PointCountDataset',
        points_dataset=dict(**points, split='train'),
        count_classes=('epithelium', ), pipeline={{_base_.test_pipeline}}))
custom_hooks = [dict(type='MILTopKSamplingHook', batch_size=8)]
train_cfg = dict(max_epochs=40)
default_hooks = dict(logger=dict(interval=5))
