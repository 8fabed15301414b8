"""Tests for tools/train.py, tools/test.py and tools/dist_{train,test}.sh.

They use the toy runner config ``tests/data/configs/toy_runner.py`` (toy model / dataset in
``tests/data/protocal_toy.py``), so they do not depend on the detector parts.
"""
import importlib.util
import json
import os
import os.path as osp
import pickle
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import protocal  # noqa: F401
from protocal.utils import is_cpu_only

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA = osp.join(ROOT, 'tests', 'data')
TOY_CFG = osp.join(DATA, 'configs', 'toy_runner.py')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'protocal_tool_{name}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = load_tool('train')
test_tool = load_tool('test')


@pytest.fixture(autouse=True)
def toy_on_path(monkeypatch):
    """``custom_imports`` of the toy config needs ``protocal_toy`` importable."""
    monkeypatch.syspath_prepend(DATA)


def tool_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = DATA + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# argument parsing
# ------------------------------------------------------------------------------------------
def test_train_parse_defaults():
    args = train_tool.parse_args(['cfg.py'])
    assert args.config == 'cfg.py'
    assert args.work_dir is None and args.resume is None and not args.amp
    assert args.launcher == 'none' and args.cfg_options is None


def test_train_parse_flags():
    args = train_tool.parse_args([
        'cfg.py', '--work-dir', 'wd', '--amp', '--launcher', 'pytorch', '--local-rank', '1',
        '--cfg-options', 'train_cfg.max_iters=3', 'model.sizes=[1,2]'
    ])
    assert args.work_dir == 'wd' and args.amp and args.launcher == 'pytorch'
    assert args.local_rank == 1
    assert args.cfg_options == {'train_cfg.max_iters': 3, 'model.sizes': [1, 2]}


@pytest.mark.parametrize('argv, expected', [
    (['cfg.py', '--resume'], 'auto'),
    (['cfg.py', '--resume', 'ckpt.pth'], 'ckpt.pth'),
    (['cfg.py', '--resume', '--amp'], 'auto'),
])
def test_train_parse_resume(argv, expected):
    assert train_tool.parse_args(argv).resume == expected


@pytest.mark.parametrize('tool, argv', [('train', ['cfg.py', '--launcher', 'horovod']),
                                        ('train', []), ('test', ['cfg.py'])])
def test_parse_errors(tool, argv):
    module = train_tool if tool == 'train' else test_tool
    with pytest.raises(SystemExit):
        module.parse_args(argv)


def test_test_parse_flags():
    args = test_tool.parse_args([
        'cfg.py', 'ckpt.pth', '--out', 'p.pkl', '--show-dir', 'vis', '--wait-time', '0.5',
        '--metrics-json', 'm.json', '--launcher', 'slurm'
    ])
    assert (args.config, args.checkpoint, args.out) == ('cfg.py', 'ckpt.pth', 'p.pkl')
    assert args.show_dir == 'vis' and args.wait_time == 0.5 and not args.show
    assert args.metrics_json == 'm.json' and args.launcher == 'slurm'


# ------------------------------------------------------------------------------------------
# train.py: config building and early validation
# ------------------------------------------------------------------------------------------
def test_train_build_config_defaults():
    cfg = train_tool.build_config(train_tool.parse_args([TOY_CFG]))
    assert cfg.work_dir == osp.join('work_dirs', 'toy_runner')
    assert cfg.launcher == 'none' and cfg.resume is False and cfg.load_from is None
    if is_cpu_only():
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'


def test_train_build_config_options(tmp_path):
    ckpt = tmp_path / 'iter_2.pth'
    ckpt.write_bytes(b'x')
    cfg = train_tool.build_config(train_tool.parse_args([
        TOY_CFG, '--work-dir', str(tmp_path), '--resume', str(ckpt), '--cfg-options',
        'train_cfg.max_iters=7'
    ]))
    assert cfg.work_dir == str(tmp_path) and cfg.train_cfg.max_iters == 7
    assert cfg.resume is True and cfg.load_from == str(ckpt)

    cfg = train_tool.build_config(train_tool.parse_args([TOY_CFG, '--resume']))
    assert cfg.resume is True and cfg.load_from is None


def test_train_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match='config file not found.*nope.py'):
        train_tool.build_config(train_tool.parse_args([str(tmp_path / 'nope.py')]))


def test_train_missing_resume_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint to resume from.*gone.pth'):
        train_tool.build_config(
            train_tool.parse_args([TOY_CFG, '--resume', str(tmp_path / 'gone.pth')]))


def test_train_missing_data_root(tmp_path):
    missing = str(tmp_path / 'no_such_dataset')
    args = train_tool.parse_args(
        [TOY_CFG, '--cfg-options', f'train_dataloader.dataset.data_root={missing}'])
    with pytest.raises(FileNotFoundError) as err:
        train_tool.build_config(args)
    msg = str(err.value)
    assert 'train_dataloader.dataset.data_root' in msg and missing in msg
    assert 'docs/datasets.md' in msg


def test_train_existing_data_root_passes(tmp_path):
    args = train_tool.parse_args(
        [TOY_CFG, '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path}'])
    assert train_tool.build_config(args).train_dataloader.dataset.data_root == str(tmp_path)


def test_data_roots_of_wrapped_datasets(tmp_path):
    from protocal.utils import check_data_roots
    cfg = Config(dict(val_dataloader=dict(dataset=dict(
        type='ConcatDataset',
        datasets=[dict(data_root=str(tmp_path)),
                  dict(type='RepeatDataset', dataset=dict(data_root='missing_root'))]))))
    with pytest.raises(FileNotFoundError, match=r'val_dataloader\.dataset\.datasets\[1\]'
                       r'\.dataset\.data_root'):
        check_data_roots(cfg, ['train_dataloader', 'val_dataloader'])


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU behaviour')
def test_train_amp_on_cpu_is_refused():
    with pytest.raises(ValueError, match='--amp.*CUDA'):
        train_tool.build_config(train_tool.parse_args([TOY_CFG, '--amp']))


def test_train_main_reports_error_in_one_line(tmp_path):
    """main() turns pre-flight errors into ``SystemExit('train.py: error: ...')``: one line on
    stderr, no traceback."""
    with pytest.raises(SystemExit) as err:
        train_tool.main([TOY_CFG, '--cfg-options',
                         f'train_dataloader.dataset.data_root={tmp_path}/absent'])
    assert str(err.value).startswith('train.py: error: train_dataloader.dataset.data_root')


def test_test_main_reports_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit) as err:
        test_tool.main([TOY_CFG, str(tmp_path / 'absent.pth')])
    assert str(err.value).startswith('test.py: error: checkpoint not found')


# ------------------------------------------------------------------------------------------
# test.py: config building
# ------------------------------------------------------------------------------------------
@pytest.fixture
def fake_ckpt(tmp_path):
    path = tmp_path / 'model.pth'
    path.write_bytes(b'x')
    return str(path)


def test_test_build_config(fake_ckpt):
    cfg = test_tool.build_config(test_tool.parse_args([TOY_CFG, fake_ckpt]))
    assert cfg.load_from == fake_ckpt and cfg.resume is False
    assert cfg.work_dir == osp.join('work_dirs', 'toy_runner')


def test_test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint not found.*absent.pth'):
        test_tool.build_config(test_tool.parse_args([TOY_CFG, str(tmp_path / 'absent.pth')]))


def test_test_missing_config(tmp_path, fake_ckpt):
    with pytest.raises(FileNotFoundError, match='config file not found'):
        test_tool.build_config(test_tool.parse_args([str(tmp_path / 'x.py'), fake_ckpt]))


def test_test_missing_data_root(fake_ckpt):
    args = test_tool.parse_args(
        [TOY_CFG, fake_ckpt, '--cfg-options', 'test_dataloader.dataset.data_root=/no/such/dir'])
    with pytest.raises(FileNotFoundError, match='test_dataloader.dataset.data_root.*/no/such/dir'):
        test_tool.build_config(args)


def test_test_out_appends_dump_results(fake_ckpt):
    cfg = test_tool.build_config(test_tool.parse_args([TOY_CFG, fake_ckpt, '--out', 'p.pkl']))
    assert cfg.test_evaluator == [
        dict(type='ToyMAEMetric'), dict(type='DumpResults', out_file_path='p.pkl')]
    with pytest.raises(ValueError, match='.pkl'):
        test_tool.build_config(test_tool.parse_args([TOY_CFG, fake_ckpt, '--out', 'p.json']))


@pytest.mark.parametrize('evaluator, expected', [
    (None, [dict(type='DumpResults', out_file_path='o.pkl')]),
    ([dict(type='A')], [dict(type='A'), dict(type='DumpResults', out_file_path='o.pkl')]),
    (dict(type='Evaluator', metrics=dict(type='A')),
     dict(type='Evaluator', metrics=[dict(type='A'), dict(type='DumpResults',
                                                          out_file_path='o.pkl')])),
])
def test_add_dump_metric_forms(evaluator, expected):
    cfg = Config(dict(test_evaluator=evaluator))
    assert test_tool.add_dump_metric(cfg, 'o.pkl').test_evaluator == expected


def test_show_dir_enables_visualization_hook():
    cfg = Config(dict(default_hooks=dict(visualization=dict(type='DetVisualizationHook'))))
    test_tool.enable_visualization(cfg, show=False, show_dir='vis', wait_time=2)
    assert cfg.default_hooks.visualization == dict(
        type='DetVisualizationHook', draw=True, test_out_dir='vis')
    test_tool.enable_visualization(cfg, show=True, show_dir=None, wait_time=0.1)
    assert cfg.default_hooks.visualization.show is True
    assert cfg.default_hooks.visualization.wait_time == 0.1
    with pytest.raises(ValueError, match='visualization hook'):
        test_tool.enable_visualization(Config(dict()), show=True, show_dir=None, wait_time=1)


# ------------------------------------------------------------------------------------------
# end to end: 2-process gloo training, then testing
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def dist_trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('dist_train')
    env = tool_env()
    env.update(PYTHON=sys.executable, PORT=str(free_port()))
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), TOY_CFG, '2', '--work-dir',
         str(work_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return work_dir


def test_dist_train_two_gloo_processes(dist_trained):
    reports = []
    for rank in (0, 1):
        with open(dist_trained / f'rank{rank}.json') as f:
            reports.append(json.load(f))
    for rank, rep in enumerate(reports):
        assert rep['rank'] == rank and rep['world_size'] == 2 and rep['iter'] == 4
        if is_cpu_only():
            assert rep['backend'] == 'gloo'
            assert rep['wrapper'] == 'CPUDistributedDataParallel'
    # each rank saw its own half of the data, and DDP kept the weights identical
    assert set(reports[0]['seen']).isdisjoint(reports[1]['seen'])
    assert reports[0]['checksum'] == pytest.approx(reports[1]['checksum'], rel=1e-6)


def test_dist_train_writes_checkpoints(dist_trained):
    names = os.listdir(dist_trained)
    assert {'iter_2.pth', 'iter_4.pth', 'last_checkpoint'} <= set(names)
    assert not [n for n in names if n.endswith('.tmp')]
    with open(dist_trained / 'last_checkpoint') as f:
        pointer = f.read()
    assert pointer == str(dist_trained / 'iter_4.pth')
    ckpt = torch.load(pointer, map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    assert 'conv.weight' in ckpt['state_dict']  # saved without the DDP "module." prefix


def test_test_tool_writes_predictions_and_metrics(dist_trained, tmp_path):
    out, metrics = tmp_path / 'preds.pkl', tmp_path / 'metrics.json'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), TOY_CFG,
         str(dist_trained / 'iter_4.pth'), '--work-dir', str(tmp_path / 'wd'), '--out', str(out),
         '--metrics-json', str(metrics)],
        cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-5000:]
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert [p['idx'] for p in preds] == list(range(8))
    assert all(p['pred'].shape == () for p in preds)
    with open(metrics) as f:
        result = json.load(f)
    assert result['toy/num_samples'] == 8
    mae = sum(abs(float(p['pred'] - p['target'])) for p in preds) / 8
    assert result['toy/mae'] == pytest.approx(mae, rel=1e-5)


def test_dist_test_two_processes(dist_trained, tmp_path):
    out = tmp_path / 'preds.pkl'
    env = tool_env()
    env.update(PYTHON=sys.executable, PORT=str(free_port()))
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), TOY_CFG,
         str(dist_trained / 'iter_4.pth'), '2', '--work-dir', str(tmp_path / 'wd'), '--out',
         str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-5000:]
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert sorted(p['idx'] for p in preds) == list(range(8))


def test_dist_scripts_usage():
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), TOY_CFG],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage' in proc.stderr
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), TOY_CFG, 'x.pth'],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage' in proc.stderr


def test_remote_checkpoint_is_not_checked_locally():
    args = test_tool.parse_args([TOY_CFG, 'https://example.com/model.pth'])
    assert test_tool.build_config(args).load_from == 'https://example.com/model.pth'
