# Plain CAM baseline: same MiT-B0, same multi-stage BCE, same schedule and post-processing, but a
# linear (1x1 conv) classifier per stage instead of the prototype bank; no L_sim / L_div.
_base_ = './lpd_mit-b0_demo-cpu_ebhi.py'
model = dict(
    head=dict(_delete_=True, type='LinearCAMHead', num_classes=6, in_channels=[32, 64, 160, 256]),
    loss_sim=None,
    loss_div=None,
    frozen_encoder=None)
