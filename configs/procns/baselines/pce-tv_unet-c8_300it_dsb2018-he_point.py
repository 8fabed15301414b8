# Baseline (WSL4MIS): pCE + 0.01 x total-variation (morphological contour) loss over classes.
_base_ = ['../procns_unet-c8_300it_dsb2018-he_point.py']
model = dict(losses=[dict(type='PartialCELoss'), dict(type='TotalVariationLoss',
                                                      loss_weight=0.01)])
custom_hooks = []
