"""End to end through the real tools: train -> resume -> test (--out, --show-dir) -> infer, on the
bundled demo data with a tiny schedule; and the headline HER2 config on a tiny fixture."""
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CFG = 'configs/pcl/pcl_r18-fpn_40e_ihc-demo-10pct.py'
NO_AUGMENT = ('train_dataloader.dataset.dataset.pipeline.2.prob=0',
              'train_dataloader.dataset.dataset.pipeline.3.prob=0')


def run_tool(*args, check=True):
    env = dict(os.environ, OMP_NUM_THREADS='2', PYTHONHASHSEED='0')
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-5000:]}')
    return proc


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Two epochs (2 iterations each) of the PCL demo config, checkpoint every epoch.

    Flips/rotations are switched off: mmengine does not checkpoint numpy's global RNG, so only an
    augmentation-free run can be compared bit for bit with a resumed one."""
    work = tmp_path_factory.mktemp('pcl_demo')
    run_tool('tools/train.py', DEMO_CFG, '--work-dir', str(work), '--cfg-options',
             'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
             'train_dataloader.dataset.times=1', 'default_hooks.checkpoint.interval=1',
             'default_hooks.checkpoint.max_keep_ckpts=5', *NO_AUGMENT)
    return work


def test_train_writes_checkpoints_and_validates(trained):
    assert osp.isfile(trained / 'epoch_1.pth') and osp.isfile(trained / 'epoch_2.pth')
    assert (trained / 'last_checkpoint').read_text().strip().endswith('epoch_2.pth')
    assert not list(trained.glob('*.tmp')), 'no half-written checkpoint may remain'
    logs = list(trained.glob('*/*.log'))
    assert logs and 'point/mF1' in logs[0].read_text()
    ckpt = torch.load(trained / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4
    # the PCL prototypes travel with the model
    assert any(k.endswith('loss_heatmap.bank.prototypes') for k in ckpt['state_dict'])
    assert ckpt['meta']['dataset_meta']['classes'] == ['dab_positive', 'dab_negative'] or \
        tuple(ckpt['meta']['dataset_meta']['classes']) == ('dab_positive', 'dab_negative')


def test_resume_continues_at_the_right_iteration(trained, tmp_path):
    work = tmp_path / 'resumed'
    work.mkdir()
    # resume from epoch 1 in a fresh work dir and train to epoch 2: same iteration counter and
    # same weights as the uninterrupted run (deterministic CPU training)
    run_tool('tools/train.py', DEMO_CFG, '--work-dir', str(work), '--resume',
             str(trained / 'epoch_1.pth'), '--cfg-options', 'train_cfg.max_epochs=2',
             'train_cfg.val_interval=2', 'train_dataloader.dataset.times=1',
             'default_hooks.checkpoint.interval=1', *NO_AUGMENT)
    assert 'resumed' in next(work.glob('*/*.log')).read_text().lower()
    ckpt = torch.load(work / 'epoch_2.pth', map_location='cpu', weights_only=False)
    ref = torch.load(trained / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4 and ckpt['meta']['epoch'] == 2
    assert not osp.exists(work / 'epoch_1.pth'), 'epoch 1 must not be trained again'
    for key, value in ref['state_dict'].items():
        torch.testing.assert_close(ckpt['state_dict'][key], value, rtol=1e-4, atol=1e-5,
                                   msg=f'{key} differs after resume')
    # Adam moments restored and advanced identically
    for a, b in zip(ckpt['optimizer']['state'].values(), ref['optimizer']['state'].values()):
        torch.testing.assert_close(a['exp_avg'], b['exp_avg'], rtol=1e-4, atol=1e-6)


def test_test_tool_writes_predictions_metrics_and_visualisations(trained, tmp_path):
    out = tmp_path / 'preds.pkl'
    metrics = tmp_path / 'metrics.json'
    run_tool('tools/test.py', DEMO_CFG, str(trained / 'epoch_2.pth'), '--work-dir',
             str(tmp_path / 'test'), '--out', str(out), '--show-dir', 'vis', '--metrics-json',
             str(metrics))
    values = json.loads(metrics.read_text())
    for key in ('point/mF1', 'point/det_f1', 'point/dab_positive_f1', 'point/dab_negative_f1',
                'point/unannotated_recall'):
        assert key in values and 0.0 <= values[key] <= 1.0
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 3  # the three training tiles (the demo's test split)
    assert {'points', 'labels', 'scores'} <= set(preds[0]['pred_instances'])
    images = [p for p in (tmp_path / 'test').rglob('vis/*.png')] + \
        [p for p in (tmp_path / 'test').rglob('vis/*.jpg')]
    assert len(images) == 3


def test_infer_tool_writes_csv_geojson_and_overlay(trained, tmp_path):
    run_tool('tools/infer.py', DEMO_CFG, str(trained / 'epoch_2.pth'),
             'data/demo/ihc_points/images/val', '--out-dir', str(tmp_path), '--heatmap')
    stems = [p.stem for p in (tmp_path).glob('*.csv')]
    assert len(stems) == 1
    stem = stems[0]
    header = (tmp_path / f'{stem}.csv').read_text().splitlines()[0]
    assert header.split(',')[:3] == ['x', 'y', 'class']
    geo = json.loads((tmp_path / f'{stem}.geojson').read_text())
    assert geo['type'] == 'FeatureCollection'
    overlay = cv2.imread(str(tmp_path / f'{stem}_overlay.png'))
    assert overlay is not None and overlay.shape[:2] == (256, 256)
    # sliding-window mode on the same image gives a valid result too
    run_tool('tools/infer.py', DEMO_CFG, str(trained / 'epoch_2.pth'),
             'data/demo/ihc_points/images/val', '--out-dir', str(tmp_path / 'slide'), '--mode',
             'slide', '--crop-size', '128', '--stride', '96', '--no-overlay')
    assert (tmp_path / 'slide' / f'{stem}.csv').is_file()


def _her2_fixture(root, rng):
    for split in ('train', 'val'):
        os.makedirs(root / 'img' / split)
        os.makedirs(root / 'ground_truth' / split)
        for i in range(2):
            img = (rng.random((320, 320, 3)) * 255).astype(np.uint8)
            cv2.imwrite(str(root / 'img' / split / f'{i + 1}.png'), img)
            pts = rng.uniform(10, 310, (24, 2))
            cls = rng.integers(1, 3, 24)
            lines = ['x,y,class'] + [f'{x:.1f},{y:.1f},{c}' for (x, y), c in zip(pts, cls)]
            (root / 'ground_truth' / split / f'{i + 1}.csv').write_text('\n'.join(lines) + '\n')


def test_her2_10pct_explains_missing_data_then_trains_on_fixture(tmp_path):
    missing = tmp_path / 'nowhere'
    proc = run_tool('tools/train.py', 'configs/pcl/her2_10pct.py', '--work-dir',
                    str(tmp_path / 'w0'), '--cfg-options',
                    f'train_dataloader.dataset.data_root={missing}',
                    f'val_dataloader.dataset.data_root={missing}',
                    f'test_dataloader.dataset.data_root={missing}', check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert str(missing) in message
    assert 'img/' in message and 'ground_truth' in message  # the expected layout is shown

    root = tmp_path / 'her2'
    _her2_fixture(root, np.random.default_rng(0))
    work = tmp_path / 'w1'
    run_tool('tools/train.py', 'configs/pcl/her2_10pct.py', '--work-dir', str(work),
             '--cfg-options', f'train_dataloader.dataset.data_root={root}',
             f'val_dataloader.dataset.data_root={root}', f'test_dataloader.dataset.data_root={root}',
             'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
             'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
             'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
             'test_dataloader.persistent_workers=False', 'train_cfg.max_epochs=1',
             'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1')
    assert osp.isfile(work / 'epoch_1.pth')
    log = next(work.glob('*/*.log')).read_text()
    assert 'loss_ce' in log and 'loss_sfl' in log and 'loss_el' in log
    assert 'point/mF1' in log


def test_threshold_sweep_is_monotonic_in_recall(trained, tmp_path):
    out = tmp_path / 'sweep.json'
    run_tool('tools/analysis_tools/threshold_sweep.py', DEMO_CFG, str(trained / 'epoch_2.pth'),
             '--split', 'val', '--thrs', '0.01', '0.5', '0.99', '--out', str(out))
    sweep = json.loads(out.read_text())
    recalls = [sweep[t]['point/det_recall'] for t in ('0.01', '0.5', '0.99')]
    assert recalls[0] >= recalls[1] >= recalls[2]


def test_summarize_demo_table(tmp_path):
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
    try:
        from summarize_demo import summarize
    finally:
        sys.path.pop(0)
    (tmp_path / 'pcl').mkdir()
    (tmp_path / 'pcl' / 'metrics_val.json').write_text(json.dumps({'point/mF1': 0.5}))
    (tmp_path / 'classical_val.json').write_text(json.dumps({'mF1': 0.25}))
    table = summarize(tmp_path, ['pcl', 'plain'])
    rows = table.splitlines()
    assert rows[2].split()[:2] == ['pcl', '0.500']
    assert rows[3].split()[1] == '-'  # missing run: shown as '-', not an error
    assert rows[4].startswith('classical blob') and '0.250' in rows[4]
