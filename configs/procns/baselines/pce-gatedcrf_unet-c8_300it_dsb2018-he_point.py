# Baseline (WSL4MIS): pCE + 0.1 x Gated-CRF loss (kernel sigma_xy 6, sigma_rgb 0.1, radius 5).
_base_ = ['../procns_unet-c8_300it_dsb2018-he_point.py']
model = dict(losses=[dict(type='PartialCELoss'), dict(type='GatedCRFLoss', loss_weight=0.1)])
custom_hooks = []
