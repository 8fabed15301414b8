"""Issue 10 tools: ratio sweep (tiny schedule, resume), demo pieces, overlays."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config

import protocal  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ENDO_CFGS = {
    'plain': 'configs/pointdet/heatmap_r18-fpn_20e_endonuke-10pct.py',
    'pcl': 'configs/pcl/pcl_r18-fpn_20e_endonuke-10pct.py',
    'sel': 'configs/sel/sel_r18-fpn_20e_endonuke-nucleus-10pct.py',
    'plain1': 'configs/pointdet/heatmap_r18-fpn_20e_endonuke-nucleus-10pct.py',
}
DSB_CFGS = ['configs/pointdet/heatmap_r18-fpn_20e_dsb2018-he-10pct.py',
            'configs/sel/sel_r18-fpn_20e_dsb2018-he-10pct.py']


def load_tool(name, folder='analysis_tools'):
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, 'tools', folder,
                                                                 name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------- configs
@pytest.mark.parametrize('path', list(ENDO_CFGS.values()) + DSB_CFGS + [
    'configs/pointdet/heatmap_r18-fpn_40e_ihc-demo-10pct.py',
    'configs/pcl/pcl_r18-fpn_40e_ihc-demo-10pct.py'])
def test_overlay_radius_is_the_metric_radius(path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    assert cfg.visualizer.match_radius == cfg.test_evaluator.radius


def test_real_configs_build_their_datasets():
    from mmdet.registry import DATASETS, MODELS
    for path in list(ENDO_CFGS.values()) + DSB_CFGS:
        cfg = Config.fromfile(osp.join(ROOT, path))
        train = DATASETS.build(cfg.train_dataloader.dataset)
        test = DATASETS.build(cfg.test_dataloader.dataset)
        assert len(train) > len(test) > 0
        assert cfg.model.head.num_classes == len(train.metainfo['classes'])
        assert cfg.model.head.codec.num_classes == cfg.model.head.num_classes
        MODELS.build(cfg.model)
    # SEL and its plain baseline are single-class; PCL and its baseline use the 3 classes
    assert Config.fromfile(osp.join(ROOT, ENDO_CFGS['sel'])).model.head.num_classes == 1
    assert Config.fromfile(osp.join(ROOT, ENDO_CFGS['pcl'])).model.head.num_classes == 3


def test_run_demo_script_is_valid_and_points_at_real_configs():
    script = osp.join(ROOT, 'tools', 'run_demo.sh')
    subprocess.run(['bash', '-n', script], check=True)
    text = open(script).read()
    for path in ENDO_CFGS.values():
        if path in text:
            assert osp.isfile(osp.join(ROOT, path))
    assert ENDO_CFGS['pcl'] in text and 'predict_tiles.py' in text and '--choose-thr' in text


# ------------------------------------------------------------------------------- overlays
def test_overlay_upscale_and_legend_radius(monkeypatch):
    import protocal.visualization.point_visualizer as pv
    seen = []
    monkeypatch.setattr(pv, '_draw_legend', lambda img, entries, size=1.0: seen.append(
        (entries, size)))
    img = np.full((20, 30, 3), 200, np.uint8)
    pred = dict(points=np.array([[5.0, 5.0], [20.0, 10.0]]), labels=np.array([0, 0]),
                scores=np.array([0.9, 0.8]))
    gt = dict(points=np.array([[6.0, 5.0], [2.0, 15.0]]), labels=np.array([0, 0]))
    out = pv.draw_points_overlay(img, pred=pred, gt=gt, classes=['a'], radius=6, upscale=4)
    assert out.shape == (80, 120, 3)
    texts = [t for _, t, _ in seen[0][0]]
    assert 'TP 1 (match r=6 px)' in texts and 'FP 1' in texts and 'FN 1' in texts
    assert seen[0][1] == 2.0
    # nearest-neighbour upscale: an undrawn corner block stays a solid 4x4 copy of the pixel
    assert (out[-4:, -4:] == 200).all()
    with pytest.raises(ValueError, match='upscale'):
        pv.draw_points_overlay(img, pred=pred, upscale=0)


def test_visualizer_names_overlays_after_the_tile(tmp_path):
    from mmdet.structures import DetDataSample
    from protocal.visualization.point_visualizer import _unique_out_file
    sample = DetDataSample(metainfo=dict(img_id='4560', img_path='x/4560/image.png'))
    assert _unique_out_file(str(tmp_path / 'image.png'), sample) == str(tmp_path / '4560.png')
    sample = DetDataSample(metainfo=dict(img_id='tile3', img_path='x/tile3.png'))
    assert _unique_out_file(str(tmp_path / 'tile3.png'), sample) == str(tmp_path / 'tile3.png')


# ------------------------------------------------------------------------------- summary
def test_choose_threshold_and_summary(tmp_path):
    tool = load_tool('summarize_demo')
    sweep = {'0.05': {'point/stroma_f1': 0.5, 'point/epithelium_f1': 0.3, 'point/other_f1': 0,
                      'point/mF1': 0.27},
             '0.1': {'point/stroma_f1': 0.6, 'point/epithelium_f1': 0.2, 'point/other_f1': 0,
                     'point/mF1': 0.27},
             '0.3': {'point/stroma_f1': 0.4, 'point/epithelium_f1': 0.5, 'point/other_f1': 0.3,
                     'point/mF1': 0.4}}
    assert tool.choose_threshold(sweep, ['stroma', 'epithelium']) == 0.3  # 0.45 > 0.4
    assert tool.choose_threshold(sweep) == 0.3
    sweep['0.3']['point/epithelium_f1'] = 0.4  # 0.4 = tie with 0.1 -> closest to 0.1
    assert tool.choose_threshold(sweep, ['stroma', 'epithelium']) == 0.1
    (tmp_path / 'pcl').mkdir()
    (tmp_path / 'pcl' / 'metrics_test.json').write_text(json.dumps(
        {'point/stroma_f1': 0.6, 'point/epithelium_f1': 0.4, 'point/other_f1': 0.0,
         'point/mF1': 0.333, 'point/det_f1': 0.7}))
    (tmp_path / 'pcl' / 'score_thr.txt').write_text('0.2\n')
    (tmp_path / 'classical_test.json').write_text(json.dumps({'det_f1': 0.55}))
    rows = tool.summarize(tmp_path, ['pcl'], ['stroma', 'epithelium']).splitlines()
    cells = rows[2].split()
    assert cells[0] == 'pcl' and cells[2] == '0.500' and cells[3] == '0.700'
    assert cells[-1] == '0.2'
    assert rows[3].startswith('classical blob') and '0.550' in rows[3]


# ------------------------------------------------------------------------------- sweep
def test_sweep_grids_and_overrides():
    sweep = load_tool('ratio_sweep')
    default = sweep.grid_runs('default', ['plain', 'pcl', 'sel', 'plain1'])
    assert len(default) == 16 and default[:4] == [(m, 0.1, 0) for m in
                                                 ('plain', 'pcl', 'sel', 'plain1')]
    assert len(sweep.grid_runs('full', ['plain', 'pcl', 'sel', 'plain1'])) == 60
    assert sweep.grid_runs('small', ['sel']) == [('sel', 0.1, 0)]
    opts = sweep.train_overrides(0.5, 2, 7, 'x.json')
    assert 'train_dataloader.dataset.sparse_ratio=0.5' in opts
    assert 'randomness.seed=2' in opts and 'param_scheduler.1.end=7' in opts
    assert 'test_dataloader.dataset.split_file=x.json' in opts
    for method, path in ENDO_CFGS.items():
        assert sweep.DATASETS['endonuke']['configs'][method] == path


def test_sweep_tiny_schedule_resumes(tmp_path, monkeypatch):
    """One real run (1 epoch, 2 training tiles), then: no retraining, evaluation-only resume."""
    sweep = load_tool('ratio_sweep')
    split = tmp_path / 'tiny.json'
    split.write_text(json.dumps({'train': ['1010', '1580'], 'val': ['1014'],
                                 'test': ['4560']}))
    work = tmp_path / 'sweep'
    argv = ['--dataset', 'endonuke', '--grid', 'small', '--methods', 'plain', '--epochs', '1',
            '--split-file', str(split), '--work-dir', str(work), '--thrs', '0.1', '0.5']
    assert sweep.main(argv) == 0
    run = work / 'plain_r0.1_s0'
    result = json.loads((run / 'result.json').read_text())
    assert result['chosen_thr'] in (0.1, 0.5) and result['train_cpu_s'] > 0
    assert set(result['test']) == {'0.1', '0.5'}
    assert 'det_unannotated_recall' in result['train']['0.1']
    assert (work / 'results.md').is_file() and (work / 'f1_vs_ratio.png').is_file()
    assert (work / 'classical.json').is_file()
    md = (work / 'results.md').read_text()
    assert 'plain soft CE, 3 classes | 10%' in md and 'classical' in md
    log = (run / 'train_stdout.log').read_text()

    def no_training(*args, **kwargs):
        raise AssertionError('a finished run was retrained')

    train_run = sweep.train_run
    monkeypatch.setattr(sweep, 'train_run', no_training)
    assert sweep.main(argv) == 0                       # finished: nothing to do
    os.remove(run / 'result.json')                     # interrupted after training
    assert sweep.main(argv) == 0                       # -> evaluated only
    assert (run / 'result.json').is_file() and (run / 'train_stdout.log').read_text() == log
    # interrupted during training: the next attempt resumes from the last checkpoint
    calls = []
    monkeypatch.setattr(sweep.subprocess, 'run',
                        lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    train_run('cfg.py', str(run), [], sys.executable, str(tmp_path / 'log.txt'))
    assert '--resume' in calls[0]


def test_pcl_training_steps_are_deterministic():
    """Same seed -> bit-identical weights after a few PCL steps on augmented real tiles.

    Covers the pipeline's random flips/rotations (np.random), model init, the prototype bank and
    the loss; the demo adds num_workers=0 and fixed thread counts (tools/run_demo.sh).
    """
    import torch
    from mmdet.registry import DATASETS, MODELS
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import set_random_seed
    cfg = Config.fromfile(osp.join(ROOT, ENDO_CFGS['pcl']))
    cfg.train_dataloader.dataset.split_file = None
    cfg.train_dataloader.dataset.split = None
    pipeline = cfg.train_dataloader.dataset.pipeline  # small crops keep the test fast
    pipeline.insert(2, dict(type='PointRandomCrop', crop_size=(96, 96)))

    def train_steps():
        set_random_seed(0)
        model = MODELS.build(cfg.model)
        model.train()
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        for step in range(2):
            data = model.data_preprocessor(pseudo_collate([dataset[step], dataset[step + 5]]),
                                           True)
            losses = model.loss(data['inputs'], data['data_samples'])
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.state_dict().values()
                          if p.is_floating_point()])

    assert torch.equal(train_steps(), train_steps())


def test_suggestion_helpers():
    sc = load_tool('suggest_clicks')
    rows = [dict(tile=t, score=s) for t, s in
            [('a', 0.9), ('a', 0.8), ('a', 0.7), ('b', 0.6), ('c', 0.5)]]
    assert [r['score'] for r in sc.top_suggestions(rows, 3, per_tile=2)] == [0.9, 0.8, 0.6]
    assert len(sc.top_suggestions(rows, 10, per_tile=0)) == 5
    diag = load_tool('calibration_diagnostics')
    # P(pos < neg): all lower -> 1, all higher -> 0, ties count 1/2
    assert diag.auc(np.array([0.1, 0.2]), np.array([0.5, 0.6])) == 1.0
    assert diag.auc(np.array([0.7]), np.array([0.5, 0.6])) == 0.0
    assert diag.auc(np.array([0.5]), np.array([0.5])) == 0.5


def test_miss_statistics():
    diag = load_tool('calibration_diagnostics')
    # 4 never-annotated cells: two found, two missed; one missed cell is below the threshold
    stats = diag.miss_stats(near_prob=[0.5, 0.2, 0.03, 0.001], found=[1, 1, 0, 0],
                            det_dist=[1.0, 2.0, 9.0, 13.0], nn_dist=[10, 12, 8, 20],
                            pixel_prob=np.linspace(0, 1, 101), n_dets=6, thr=0.01)
    assert stats['found'] == 0.5 and stats['detections_per_cell'] == 1.5
    assert stats['cells_below_thr'] == 0.25 and stats['missed_below_thr'] == 0.5
    assert stats['near_prob_q_0_10_50'][0] == 0.001
    assert stats['missed_det_dist_q_25_50_75'] == [10.0, 11.0, 12.0]
    assert (stats['nn_dist_median_found'], stats['nn_dist_median_missed']) == (11.0, 14.0)
    assert stats['pixel_prob_q_1_10_50'] == pytest.approx([0.01, 0.1, 0.5])
    # everything found: no missed-cell statistics, not a NaN
    stats = diag.miss_stats([0.5], [1], [1.0], [10.0], [0.5], 1, 0.01)
    assert stats['missed_below_thr'] is None and stats['missed_det_dist_q_25_50_75'] is None
    with pytest.raises(ValueError, match='no never-annotated cells'):
        diag.miss_stats([], [], [], [], [0.5], 0, 0.01)


def test_calibration_diagnostics_runs_with_miss_report(tmp_path):
    import torch
    from protocal.apis import init_point_detector
    torch.manual_seed(0)
    cfg = osp.join(ROOT, ENDO_CFGS['pcl'])
    ckpt = str(tmp_path / 'random.pth')
    torch.save({'state_dict': init_point_detector(cfg).state_dict()}, ckpt)
    diag = load_tool('calibration_diagnostics')
    out = tmp_path / 'diag'
    assert diag.main([cfg, ckpt, '--split', 'val', '--max-maps', '1', '--thr', '0.05',
                      '--out-dir', str(out)]) == 0
    stats = json.loads((out / 'diagnostics.json').read_text())
    misses = stats['misses']
    assert misses['thr'] == 0.05 and misses['cells'] > 0 and 0 <= misses['found'] <= 1
    assert (out / 'weights_hist.png').is_file() and len(list((out / 'maps').iterdir())) == 1
    with pytest.raises(ValueError, match='--thr'):
        diag.main([cfg, ckpt, '--split', 'val', '--max-maps', '0', '--thr', '2',
                   '--out-dir', str(out)])


def test_extra_annotated_clicks(tmp_path):
    from protocal.datasets import EndoNukePointDataset
    kw = dict(data_root=osp.join(ROOT, 'data', 'real', 'endonuke'), split=None, pipeline=[],
              sparse_ratio=0.1)
    base = EndoNukePointDataset(**kw)
    info = base.get_data_info(0)
    free = np.flatnonzero(~info['gt_points_annotated'])[:3]
    extra = tmp_path / 'extra.json'
    extra.write_text(json.dumps({info['img_id']: free.tolist()}))
    more = EndoNukePointDataset(extra_annotated=str(extra), **kw).get_data_info(0)
    assert more['gt_points_annotated'].sum() == info['gt_points_annotated'].sum() + 3
    extra.write_text(json.dumps({info['img_id']: [10 ** 6]}))
    with pytest.raises(ValueError, match='has no point index 1000000'):
        EndoNukePointDataset(extra_annotated=str(extra), **kw)
    extra.write_text(json.dumps({'nope': [0]}))
    with pytest.raises(ValueError, match=r"tiles \['nope'\] are not in this split"):
        EndoNukePointDataset(extra_annotated=str(extra), **kw)


def test_build_test_split_dataset_switches_split_and_sparsity():
    from protocal.apis import build_test_split_dataset
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'pcl', 'pcl_r18-fpn_20e_endonuke-10pct.py'))
    cfg.test_dataloader.dataset.data_root = osp.join(ROOT, 'data', 'real', 'endonuke')
    splits = json.load(open(osp.join(ROOT, 'data', 'real', 'splits', 'endonuke_block.json')))
    val = build_test_split_dataset(cfg, 'val', sparse_ratio=0.1, sparse_seed=0)
    assert sorted(val.get_data_info(i)['img_id'] for i in range(len(val))) == sorted(splits['val'])
    info = val.get_data_info(0)
    assert 0 < info['gt_points_annotated'].sum() < len(info['gt_points_annotated'])


class _PointTiles:
    """Minimal stand-in for a point dataset: ``get_data_info`` of two tiles."""

    def __init__(self):
        self.infos = [
            dict(img_id='a', gt_points=np.array([[10., 10.], [50., 50.], [90., 90.]]),
                 gt_points_annotated=np.array([True, False, False])),
            dict(img_id='b', gt_points=np.array([[20., 20.], [60., 60.], [70., 20.]]),
                 gt_points_annotated=np.array([False, False, True])),
        ]

    def __len__(self):
        return len(self.infos)

    def get_data_info(self, i):
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.infos[i].items()}


def test_click_simulation_random_arm_sizes():
    sc = load_tool('suggest_clicks')
    rows = [dict(tile='a', x=52., y=49.),   # hits point 1 of a
            dict(tile='a', x=11., y=10.),   # the annotated point: no new cell -> wasted
            dict(tile='b', x=150., y=150.),  # far from everything -> wasted
            dict(tile='b', x=21., y=19.)]   # hits point 0 of b
    suggested, random, hits = sc.simulate(rows, _PointTiles(), radius=6, seed=0)
    assert hits == 2 and suggested == {'a': [1], 'b': [0]}
    # default: as many random points as the suggestions added, never an annotated one
    assert sum(map(len, random.values())) == 2
    annotated = {('a', 0), ('b', 2)}
    assert not annotated & {(t, j) for t, js in random.items() for j in js}
    # equal clicks: as many as suggestions, capped by the 4 unannotated points
    _, random_c, _ = sc.simulate(rows, _PointTiles(), radius=6, seed=0, random_count='clicks')
    assert sum(map(len, random_c.values())) == 4
    # seeded: the same draw every time, another seed may differ
    assert sc.simulate(rows, _PointTiles(), 6, 0)[1] == random
    with pytest.raises(ValueError, match='random_count'):
        sc.simulate(rows, _PointTiles(), 6, 0, random_count='all')


def test_click_ranking_score(tmp_path):
    sc = load_tool('suggest_clicks')
    # max_c M^c * 4 p (1 - p) with p = max_c p^c; the decoder's class, disagreement flagged
    row = sc.candidate_row([0.2, 0.8], [0.5, 0.1])
    assert row['score'] == pytest.approx(0.8 * 4 * 0.5 * 0.5)
    assert (row['suggested_class'], row['calib_class'], row['disagree']) == (0, 1, True)
    # a confident peak is not worth a click, whatever the calibration says
    assert sc.candidate_row([1.0], [1.0])['score'] == 0
    assert not sc.candidate_row([0.9], [0.3])['disagree']  # one class: nothing to disagree on
    with pytest.raises(SystemExit, match='CONFIG and CHECKPOINT'):
        sc.main([])
    with pytest.raises(SystemExit, match='missing.pth not found'):
        sc.main([osp.join(ROOT, ENDO_CFGS['pcl']), str(tmp_path / 'missing.pth')])


def test_click_compare_pairs_arms_by_seed(tmp_path):
    sc = load_tool('suggest_clicks')

    def run(name, tag, seed, ev, det, **extra):
        d = tmp_path / name
        d.mkdir()
        res = dict(chosen_thr=0.01, seed=seed, tag=tag, annotated_points=10,
                   test_eval_f1={'0.01': ev}, test={'0.01': dict(det_f1=det)},
                   train={'0.01': dict(det_unannotated_recall=0.5)}, **extra)
        (d / 'result.json').write_text(json.dumps(res))
        return str(d)

    sugg, rand = 'click_suggested', 'click_random'
    dirs = [run('b0', '', 0, 0.30, 0.40), run('b1', '', 1, 0.32, 0.42),
            run('s0', sugg, 0, 0.34, 0.45), run('s1', sugg, 1, 0.33, 0.41),
            run('r0', rand, 0, 0.31, 0.44), run('r1', rand, 1, 0.35, 0.43)]
    text = sc.compare(dirs)
    # suggested - none: eval gains +0.04, +0.01 -> 0.025 +- 0.021, both positive; det +0.05, -0.01
    assert (f'| {sugg} − (no extra clicks) | 0,1 | 0.025 ± 0.021 | 2/2 | 0.020 ± 0.042 | 1/2 |'
            in text)
    # suggested - random (argument order): eval +0.03, -0.02; det +0.01, -0.02
    assert f'| {sugg} − {rand} | 0,1 | 0.005 ± 0.035 | 1/2 | -0.005 ± 0.021 | 1/2 |' in text
    assert '| (no extra clicks) | 0,1 | 0.310 ± 0.014 | 0.410 ± 0.014 |' in text
    # a renamed copy of a run is its own arm (its directory name after <method>_r<ratio>_s<seed>_)
    copy = run('pcl_r0.1_s0_click_random-clicks', rand, 0, 0.3, 0.4, method='pcl', ratio=0.1)
    assert '| click_random-clicks | 0 |' in sc.compare(dirs + [copy])
    with pytest.raises(ValueError, match='second run'):
        sc.compare(dirs + [run('b0bis', '', 0, 0.3, 0.4)])
    with pytest.raises(FileNotFoundError, match='not a finished'):
        sc.compare([str(tmp_path)])


def test_sweep_report_means_seeds_and_fully_annotated_recall():
    sweep = load_tool('ratio_sweep')

    def res(ratio, seed, ev, det, unann):
        m = {'det_f1': det, 'det_unannotated_recall': unann, 'nucleus_precision': 0.5,
             'nucleus_recall': 0.5, 'nucleus_f1': ev}
        return dict(method='plain1', ratio=ratio, seed=seed, chosen_thr=0.01, classes=['nucleus'],
                    test_present=[True], test_eval_f1={'0.01': ev, '0.1': 0.0},
                    test={'0.01': m, '0.1': dict(m, det_f1=0.0)},
                    train={'0.01': m, '0.1': dict(m, det_unannotated_recall=0.0)},
                    train_cpu_s=120)
    rows = sweep.summarize({'a': res(0.1, 0, 0.3, 0.4, 0.5), 'b': res(0.1, 1, 0.5, 0.6, 0.7),
                            'c': res(1.0, 0, 0.8, 0.9, 0.0)})
    text = sweep.markdown(rows, None, 't')
    line10 = next(l for l in text.splitlines() if '| 10% |' in l)
    assert '| 0,1 |' in line10 and '0.400 ± 0.141' in line10 and '0.600 ± 0.141' in line10
    # 100%: no never-annotated cells -> '–', not a recall of 0
    cells = [c.strip() for c in next(l for l in text.splitlines() if '| 100% |' in l).split('|')]
    assert cells[9:11] == ['–', '–'] and cells[5] == '0.800'
    # per-seed table: only rows with several seeds, one value for a 1-class model
    assert '| method | annotated | seed 0 | seed 1 |' in text
    assert '| plain soft CE, 1 class | 10% | 0.300 | 0.500 |' in text
    assert not any(l.startswith('| plain soft CE, 1 class | 100% | 0.800 |')
                   for l in text.splitlines())
