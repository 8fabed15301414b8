# MIL counting pipeline on the bundled EndoNuke tiles: trained from per-tile *epithelium counts*
# only, evaluated on block D (never trained on) for counting (kappa, MAE) and localisation
# (F1 against the expert epithelium points, 6-px radius as in
# configs/_base_/datasets/endonuke_points.py).
#   python tools/mil/run_pipeline.py configs/mil/pipelines/mil_r18_endonuke-epi.py \
#       --work-dir work_dirs/13/endonuke_epi
stages = dict(
    counter='configs/mil/mil-counter_r18_100e_endonuke-epi.py',
    tile='configs/mil/mil-tile_r18_40e_endonuke-epi.py',
    seg='configs/mil/mil-seg_r18_30e_endonuke-epi.py')
stage_options = dict(counter=dict(), tile=dict(), seg=dict())
pseudo_mask = dict(
    tile_size=None, stride=4, thr=0.5, count_gate='gt',  # training counts are labels: gate on them
    refine=dict(type='hsv_value', max_value=170),
    min_size=30, hole_size=20)
localize = dict(smooth='gaussian', ksize=7, sigma=1.5, seed_size=8, seed_stride=4,
                seed_thr=0.2, eps=5.0)
_points = dict(type='EndoNukePointDataset', data_root='data/real/endonuke/',
               split_file='data/real/splits/endonuke_block.json')
evaluation = dict(
    splits=dict(
        val=dict(type='PointCountDataset', points_dataset=dict(**_points, split='val'),
                 count_classes=('epithelium', )),
        test=dict(type='PointCountDataset', points_dataset=dict(**_points, split='test'),
                  count_classes=('epithelium', ))),
    select_split='val',
    seed_thrs=[0.1, 0.2, 0.3, 0.5],
    radius=6, mode='ocelot',
    classical_baseline=True)
