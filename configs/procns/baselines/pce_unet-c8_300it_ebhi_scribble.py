# Baseline: partial cross-entropy only on EBHI-Seg scribbles (same everything as ProCNS).
_base_ = ['../procns_unet-c8_300it_ebhi_scribble.py']
model = dict(losses=[dict(type='PartialCELoss')])
custom_hooks = []
