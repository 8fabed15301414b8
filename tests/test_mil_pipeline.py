"""MIL counting end to end on tiny data: counter -> tile classifier (top-k hook) -> pseudo masks
-> segmentation (mmseg runner) -> evaluation, through tools/mil/run_pipeline.py, plus resume.

Tiny synthetic 64-px images (dark disks on a light background; count = number of disks) in the
generic PointDataset CSV layout, so the counts come from PointCountDataset; ResNet-18 at 1/8
width; one or two epochs per stage.
"""
import glob
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIL = osp.join(REPO, 'configs', 'mil')


def _make_points_dataset(root, n_per_split=dict(train=8, val=3, test=3), size=64, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, n in n_per_split.items():
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        import os
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(n):
            count = 0 if i % 3 == 0 else int(rng.integers(1, 7))
            img = np.full((size, size, 3), (225, 210, 220), np.uint8)
            pts = []
            while len(pts) < count:
                x, y = rng.integers(6, size - 6, 2)
                if all((x - a)**2 + (y - b)**2 > 100 for a, b in pts):
                    pts.append((int(x), int(y)))
            for x, y in pts:
                img[(xx - x)**2 + (yy - y)**2 <= 9] = (70, 40, 90)
            img = np.clip(img.astype(int) + rng.integers(-8, 8, img.shape), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(osp.join(img_dir, f'{split}{i}.png'))
            with open(osp.join(ann_dir, f'{split}{i}.csv'), 'w') as f:
                f.write('x,y,class\n' + ''.join(f'{x},{y},cell\n' for x, y in pts))


def _write_configs(tmp, data_root):
    def points(split):
        return (f"dict(type='PointCountDataset', points_dataset=dict(type='PointDataset', "
                f"data_root={data_root!r}, data_prefix=dict(img='images/{split}', "
                f"ann='annotations/{split}'), metainfo=dict(classes=('cell', )), "
                f"class_id_base=None))")
    backbone = ("dict(_delete_=True, type='ResNet', depth=18, stem_channels=8, base_channels=8, "
                "out_indices=(3, ), norm_cfg=dict(type='BN', requires_grad=True), "
                "style='pytorch')")
    (tmp / 'counter.py').write_text(f"""
_base_ = [{osp.join(MIL, 'mil-counter_r50_50e_lysto.py')!r}]
model = dict(backbone={backbone}, in_channels=64)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, **{points('train')}, pipeline={{{{_base_.train_pipeline}}}}))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, **{points('val')}, test_mode=True,
                 pipeline={{{{_base_.test_pipeline}}}}))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3))
train_cfg = dict(max_epochs=2)
default_hooks = dict(logger=dict(interval=1))
""")
    (tmp / 'tile.py').write_text(f"""
_base_ = [{osp.join(MIL, 'mil-tile_r50_30e_lysto.py')!r}]
model = dict(backbone={backbone}, in_channels=64, tile_size=16, tile_stride=8, k_per_pos=10,
             k_neg=5)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, **{points('train')}, pipeline={{{{_base_.test_pipeline}}}}))
custom_hooks = [dict(type='MILTopKSamplingHook', batch_size=4)]
train_cfg = dict(max_epochs=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
""")
    (tmp / 'seg.py').write_text(f"""
_base_ = [{osp.join(MIL, 'mil-seg_r50_30e_lysto.py')!r}]
model = dict(backbone=dict(depth=18, stem_channels=8, base_channels=8),
             decode_head=dict(in_channels=[8, 16, 32, 64], channels=2))
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False)
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
""")
    (tmp / 'pipeline.py').write_text(f"""
stages = dict(counter={str(tmp / 'counter.py')!r}, tile={str(tmp / 'tile.py')!r},
              seg={str(tmp / 'seg.py')!r})
stage_options = dict(counter=dict(), tile=dict(), seg=dict())
pseudo_mask = dict(tile_size=None, stride=4, thr=0.5, count_gate='gt',
                   refine=dict(type='hsv_value', max_value=170), min_size=5, hole_size=5)
localize = dict(smooth='gaussian', ksize=7, sigma=1.5, seed_size=8, seed_stride=4,
                seed_thr=0.2, eps=4.0)
evaluation = dict(splits=dict(val={points('val')}, test={points('test')}),
                  select_split='val', seed_thrs=[0.1, 0.3], radius=6, mode='ocelot',
                  classical_baseline=True)
""")
    return str(tmp / 'pipeline.py')


def _tool():
    spec = importlib.util.spec_from_file_location('mil_run_pipeline',
                                                  osp.join(REPO, 'tools/mil/run_pipeline.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pipeline_end_to_end_and_resume(tmp_path):
    torch.manual_seed(0)
    data_root = str(tmp_path / 'data')
    _make_points_dataset(data_root)
    cfg = _write_configs(tmp_path, data_root)
    work = str(tmp_path / 'work')
    tool = _tool()
    out = tool.main([cfg, '--work-dir', work])
    # layout
    for stage in ('counter', 'tile', 'seg'):
        done = json.load(open(osp.join(work, stage, 'DONE.json')))
        assert osp.isfile(done['checkpoint']) and osp.isfile(osp.join(work, stage, 'config.py'))
    anns = sorted(glob.glob(osp.join(work, 'pseudo_masks', 'ann', '*.png')))
    assert len(anns) == 8 and len(glob.glob(osp.join(work, 'pseudo_masks', 'img', '*.png'))) == 8
    from PIL import Image
    for a in anns:
        m = np.array(Image.open(a))
        assert set(np.unique(m).tolist()) <= {0, 1}
    # zero-count training images (gate on the training count) get empty masks
    for i in (0, 3, 6):
        mask = np.array(Image.open(osp.join(work, 'pseudo_masks', 'ann', f'train{i}.png')))
        assert mask.max() == 0
    metrics = json.load(open(osp.join(work, 'eval', 'metrics.json')))
    for split in ('val', 'test'):
        res = metrics['splits'][split]
        for k in ('kappa', 'mae'):
            assert np.isfinite(res['counting'][k])
        for key in ('localisation', 'localisation_gt_count', 'classical_localisation'):
            assert 0.0 <= res[key]['f1'] <= 1.0
    assert metrics['seed_thr'] in (0.1, 0.3)
    assert len(glob.glob(osp.join(work, 'eval', 'points', 'test', '*.csv'))) == 3
    assert glob.glob(osp.join(work, 'eval', 'heatmaps', 'test', '*_tiles.png'))
    # count * k_per_pos > number of tiles (49) -> top-k clamped, counted warning in the log
    logs = glob.glob(osp.join(work, 'tile', '*', '*.log'))
    assert any('top-k clamped to all tiles' in open(p).read() for p in logs)
    # the stage-2 classifier scores tiles in a fixed order: same scores twice
    from protocal.apis.mil import init_mil_model, score_image_tiles
    done = json.load(open(osp.join(work, 'tile', 'DONE.json')))
    model = init_mil_model(done['config'], done['checkpoint'])
    img = np.array(Image.open(osp.join(data_root, 'images', 'test', 'test1.png')))[..., ::-1]
    s1, g1 = score_image_tiles(model, np.ascontiguousarray(img))
    s2, _ = score_image_tiles(model, np.ascontiguousarray(img))
    np.testing.assert_array_equal(s1, s2)
    assert len(g1) == 49 and np.isfinite(s1).all()
    # resumable: a second run skips every finished stage
    mtime = osp.getmtime(osp.join(work, 'seg', 'DONE.json'))
    out2 = tool.main([cfg, '--work-dir', work])
    assert osp.getmtime(osp.join(work, 'seg', 'DONE.json')) == mtime
    assert set(out2) == {'counter', 'tile', 'pseudo', 'seg', 'eval'}


def test_tile_classifier_zero_count_batch_and_batched_scoring():
    """A batch of zero-count images only trains on hard negatives (no NaN); batched scoring
    equals a per-tile loop."""
    from mmengine.registry import init_default_scope
    from mmengine.structures import BaseDataElement
    from mmseg.registry import MODELS
    import protocal  # noqa: F401
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='MILTileClassifier',
        backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                      out_indices=(3, ), style='pytorch'),
        in_channels=64, tile_size=16, tile_stride=16, k_neg=3,
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[128] * 3, std=[50] * 3)))
    x = torch.randn(2, 3, 32, 32)
    samples = []
    for i in range(2):
        s = BaseDataElement(metainfo=dict(img_id=i))
        s.gt_count = torch.tensor([0.0])
        s.gt_count_cls = torch.tensor([0])
        samples.append(s)
    model.train()
    losses = model.loss(x, samples)  # online selection: only negatives, nothing to balance
    assert torch.isfinite(losses['loss_tile'])
    model.set_tile_selection({0: (np.zeros(0, np.int64), np.zeros(0, np.int64)),
                              1: (np.zeros(0, np.int64), np.zeros(0, np.int64))})
    losses = model.loss(x, samples)  # empty selection: exact zero, no NaN
    assert losses['loss_tile'].item() == 0.0
    probs, grid = model.score_tiles(x)
    assert probs.shape == (2, 4)
    model.eval()
    with torch.no_grad():
        for k, (y0, x0) in enumerate(grid.tolist()):
            p = model.tile_logits(x[1:2, :, y0:y0 + 16, x0:x0 + 16]).softmax(1)[0, 1]
            assert p.item() == pytest.approx(probs[1, k].item(), abs=1e-5)


def test_counter_loss_on_bundled_endonuke_counts():
    """The shipped EndoNuke experiment config reads real epithelium counts through
    PointCountDataset and the counter trains on them (one step, tiny backbone)."""
    from mmdet.registry import DATASETS as DET
    if DET.get('EndoNukePointDataset') is None:
        pytest.skip('EndoNukePointDataset (issue 10) not available')
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS
    import protocal  # noqa: F401
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(MIL, 'mil-counter_r18_100e_endonuke-epi.py'))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.points_dataset.data_root = osp.join(REPO, 'data/real/endonuke/')
    ds_cfg.points_dataset.split_file = osp.join(REPO, 'data/real/splits/endonuke_block.json')
    ds = DATASETS.build(ds_cfg)
    assert len(ds) == 28 and (ds.counts() == 0).sum() == 12
    cfg.model.backbone.update(stem_channels=8, base_channels=8)
    cfg.model.in_channels = 64
    model = MODELS.build(cfg.model)
    batch = pseudo_collate([ds[0], ds[1]])
    assert batch['inputs'][0].shape == (3, 200, 200)
    optim = torch.optim.Adam(model.parameters(), 1e-3)
    from mmengine.optim import OptimWrapper
    losses = model.train_step(batch, OptimWrapper(optim))
    assert torch.isfinite(losses['loss_cls']) and torch.isfinite(losses['loss_reg'])
