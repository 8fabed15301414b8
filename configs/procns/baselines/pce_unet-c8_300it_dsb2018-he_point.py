# Baseline: partial cross-entropy only (same network, labels, seed, schedule, selection as ProCNS).
_base_ = ['../procns_unet-c8_300it_dsb2018-he_point.py']
model = dict(losses=[dict(type='PartialCELoss')])
custom_hooks = []
