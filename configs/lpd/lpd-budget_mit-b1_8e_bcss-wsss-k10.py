# LPD, practical setting (NOT the paper's L_sim cost): the k10 paper model, losses, loss weights,
# warm-up and schedule, with a cheaper L_sim (the paper-faithful config is
# lpd_mit-b1_8e_bcss-wsss-k10.py: every selected pair, frozen Swin-T at 224 px):
# * sim_pairs_per_image=1: each step encodes one selected (image, prototype) pair per image, drawn
#   uniformly at random and weighted (N_b / N) so that L_fg / L_bg remain unbiased estimates of the
#   spec's mean over all N selected pairs of the batch (~5 per present class with K = 10);
# * frozen encoder: mmseg ResNet-18 (plain stem, stage-4 width 512 = the prototype dimension, so no
#   random projection) on the masked images resized to 112 px. Random (seeded) unless you set
#   checkpoint= to a local ResNet-18 checkpoint in mmseg's ResNet layout.
# Benchmark (configs/lpd/README.md#benchmark, benchmarks/bench_lpd.py): at 224 px, MiT-B1, K = 10,
# the training step stays within 2x time and 1.5x peak memory of a MiT-B1 + plain CAM head step.
_base_ = './lpd_mit-b1_8e_bcss-wsss-k10.py'
model = dict(
    sim_pairs_per_image=1,
    frozen_encoder=dict(
        _delete_=True,
        backbone=dict(type='ResNet', depth=18, out_indices=(3, ), norm_eval=True),
        embed_dims=512,
        checkpoint=None,
        input_size=(112, 112)))
