# Baseline (WSL4MIS): pCE + 0.1 x entropy minimisation (normalised by log C).
_base_ = ['../procns_unet-c8_300it_dsb2018-he_point.py']
model = dict(losses=[dict(type='PartialCELoss'), dict(type='EntropyMinimizationLoss',
                                                      loss_weight=0.1)])
custom_hooks = []
