# Baseline (pseudo-label method, Scribble2Label-style): pCE; after the same warm-up as ProCNS,
# + 0.5 x CE on unlabelled pixels whose EMA soft label is > 0.8 (same store / hook as ProCNS,
# no ANPM masking, no PRSA).
_base_ = ['../procns_unet-c8_300it_dsb2018-he_point.py']
model = dict(losses=[dict(type='PartialCELoss'), dict(type='EMAPseudoLabelLoss', loss_weight=0.5,
                                                      conf_thr=0.8)])
custom_hooks = [
    dict(type='PseudoLabelHook', refresh_pipeline={{_base_.refresh_pipeline}}, warmup_epochs=40,
         refresh_interval=5, anpm=None)
]
