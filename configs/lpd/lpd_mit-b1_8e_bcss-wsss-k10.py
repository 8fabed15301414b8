# LPD, paper setting: K = 10 prototypes per class (README / paper; "config_10prot_div05"),
# lambda_div 0.5, lambda_sim 0.1, loss warm-up 3000 iterations, 8 epochs on BCSS-WSSS.
# Evaluation as the reference: 6 TTA views, stage fusion 0.3/0.3/0.4, bg = (1 - max)^10, dense CRF,
# WSSSIoUMetric (dataset-level 5x5 matrix, mean over TUM/STR/LYM/NEC).
_base_ = [
    '../_base_/seg_default_runtime.py', '../_base_/models/lpd_mit-b1.py',
    '../_base_/datasets/bcss_wsss.py', '../_base_/schedules/schedule_lpd_8e_bcss.py'
]
model = dict(head=dict(num_prototypes=10))
# keep the best validation mIoU (the reference's best_cam.pth)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2343,
                    max_keep_ckpts=2, save_best='mIoU', rule='greater'))
