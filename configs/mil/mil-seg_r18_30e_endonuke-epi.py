# MIL counting stage 3 on the bundled EndoNuke tiles (epithelium counts); see
# mil-counter_r18_100e_endonuke-epi.py. data_root is set by tools/mil/run_pipeline.py.
_base_ = ['./mil-seg_r50_30e_lysto.py']
model = dict(
    backbone=dict(depth=18, stem_channels=32, base_channels=32),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=8))
train_dataloader = dict(batch_size=8, num_workers=0)
train_cfg = dict(max_epochs=30)
default_hooks = dict(logger=dict(interval=5))
