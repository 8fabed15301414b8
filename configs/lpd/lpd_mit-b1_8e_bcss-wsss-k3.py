# LPD, committed-config variant: K = 3 prototypes per class (work_dirs/bcss/classification/
# config.yaml of the reference, which disagrees with its README's K = 10). Everything else as k10.
_base_ = './lpd_mit-b1_8e_bcss-wsss-k10.py'
model = dict(head=dict(num_prototypes=3))
