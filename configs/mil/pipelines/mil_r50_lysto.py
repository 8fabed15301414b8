# MIL counting pipeline (LYSTO, reference defaults): read by tools/mil/run_pipeline.py, which
# trains the three stage configs in order (each a normal tools/train.py run with its own work
# dir), builds the pseudo masks between stages 2 and 3, and evaluates.
#   python tools/mil/run_pipeline.py configs/mil/pipelines/mil_r50_lysto.py \
#       --work-dir work_dirs/mil/lysto_r50
stages = dict(
    counter='configs/mil/mil-counter_r50_50e_lysto.py',
    tile='configs/mil/mil-tile_r50_30e_lysto.py',
    seg='configs/mil/mil-seg_r50_30e_lysto.py')
# extra --cfg-options per stage (e.g. shorter schedules)
stage_options = dict(counter=dict(), tile=dict(), seg=dict())
# pseudo masks of the training images (stage 3 targets). tile_size None = the classifier's
# training tile (32 px); the reference used 16-px tiles here (trap T6).
pseudo_mask = dict(
    tile_size=None, stride=5, thr=0.95, count_gate='pred',
    refine=dict(type='hsv_value', max_value=170),  # LYSTO DAB: drop bright background (V > 170)
    min_size=400, hole_size=120)
# localisation of cells in the segmentation output (counts from the stage-1 counter)
localize = dict(smooth='gaussian', ksize=15, sigma=3.0, seed_size=16, seed_stride=10,
                seed_thr=0.2, eps=11.0)
# evaluation: counting on every split listed; localisation F1 only where the dataset has points
# (LYSTO training.h5 has none); thresholds chosen on `select_split` from `seed_thrs`.
evaluation = dict(
    splits=dict(val=dict(type='LystoH5Dataset', data_root='data/lysto/', ann_file='training.h5',
                         split='val', split_every=10)),
    select_split='val',
    seed_thrs=[0.2],
    radius=16, mode='ocelot',
    classical_baseline=False)
