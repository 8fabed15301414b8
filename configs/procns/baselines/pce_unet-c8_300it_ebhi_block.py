# Baseline: partial cross-entropy only on EBHI-Seg blocks (same everything as ProCNS).
_base_ = ['../procns_unet-c8_300it_ebhi_block.py']
model = dict(losses=[dict(type='PartialCELoss')])
custom_hooks = []
