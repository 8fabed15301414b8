# Ablation: LPD without L_div (same seed, schedule and everything else).
_base_ = './lpd_mit-b0_demo-cpu_ebhi.py'
model = dict(loss_div=None)
