"""Tests for protocal.utils.compat: checkpoint load/resume under torch >= 2.6, atomic checkpoint
writes, distributed CPU training and config adaptation.

The runner tests use a self-contained toy model and dataset, so they only depend on mmengine.
"""
import copy
import logging
import os
import os.path as osp
import pickle
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel

import protocal  # noqa: F401  (applies the patches)
from protocal.utils import compat
from protocal.utils.compat import (CPUDistributedDataParallel, adapt_cfg_to_device,
                                   apply_compat_patches, atomic_write, is_cpu_only)

cpu_only = pytest.mark.skipif(not is_cpu_only(), reason='tests the CPU-only code path')


# ------------------------------------------------------------------------------------------
# toy model / data for real mmengine Runners
# ------------------------------------------------------------------------------------------
class ToyData(torch.utils.data.Dataset):

    def __init__(self, n=8):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 4, generator=gen)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], target=self.y[i])


class ToyNet(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 1)

    def forward(self, inputs, target=None, mode='tensor'):
        pred = self.fc2(self.bn(self.fc1(torch.stack(inputs))).relu())
        if mode == 'loss':
            return dict(loss=((pred - torch.stack(target))**2).mean())
        return pred


class CaptureHook(Hook):
    """Records the iteration, weights and optimizer state right before training starts (that is,
    after ``load_from`` / ``resume`` were applied)."""

    def before_train(self, runner):
        self.iter = runner.iter
        self.state = {k: v.clone() for k, v in runner.model.state_dict().items()}
        # deep copy: Adam updates its moment tensors in place during the following iterations
        self.optim = copy.deepcopy(runner.optim_wrapper.optimizer.state_dict())


def make_runner(work_dir, name, max_iters, load_from=None, resume=False, hooks=()):
    from mmengine.runner import Runner
    torch.manual_seed(0)
    return Runner(
        model=ToyNet(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(
            dataset=ToyData(),
            sampler=dict(type='InfiniteSampler', shuffle=False),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=0.05)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=list(hooks),
        load_from=load_from,
        resume=resume,
        randomness=dict(seed=0),
        default_scope='mmengine',
        log_level='WARNING')


def final_state(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def assert_state_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Runner A: 4 iterations, checkpoints at iterations 2 and 4."""
    work_dir = tmp_path_factory.mktemp('run_a')
    runner = make_runner(work_dir, 'compat_a', max_iters=4)
    runner.train()
    return dict(work_dir=work_dir, state=final_state(runner),
                optim=copy.deepcopy(runner.optim_wrapper.optimizer.state_dict()))


# ------------------------------------------------------------------------------------------
# 1. loading checkpoints (torch.load weights_only)
# ------------------------------------------------------------------------------------------
def test_checkpoint_needs_full_unpickling(trained):
    """The fix is needed: the message hub makes torch's safe loader refuse the checkpoint."""
    path = osp.join(trained['work_dir'], 'iter_4.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_trusted_local_loader_registered_and_loads(trained):
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    assert CheckpointLoader._get_checkpoint_loader('/some/file.pth') is \
        compat.trusted_load_from_local
    ckpt = _load_checkpoint(osp.join(trained['work_dir'], 'iter_4.pth'), map_location='cpu')
    assert ckpt['meta']['iter'] == 4
    assert 'message_hub' in ckpt and 'optimizer' in ckpt


def test_trusted_loader_keeps_numpy_and_reports_missing(tmp_path):
    path = tmp_path / 'np.pth'
    torch.save({'arr': np.arange(3), 'scalar': np.float64(2.5)}, path)
    out = compat.trusted_load_from_local(str(path), map_location='cpu')
    np.testing.assert_array_equal(out['arr'], [0, 1, 2])
    assert out['scalar'] == 2.5
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        compat.trusted_load_from_local(str(tmp_path / 'missing.pth'))


def test_remote_schemes_keep_their_loaders():
    from mmengine.runner.checkpoint import CheckpointLoader
    loader = CheckpointLoader._get_checkpoint_loader('https://example.com/x.pth')
    assert loader is not compat.trusted_load_from_local


def test_load_from(trained, tmp_path):
    """load_from: weights of iteration 2, fresh optimizer, training starts at iteration 0."""
    ckpt = osp.join(trained['work_dir'], 'iter_2.pth')
    expected = torch.load(ckpt, weights_only=False)['state_dict']
    hook = CaptureHook()
    runner = make_runner(tmp_path, 'compat_load', max_iters=1, load_from=ckpt, hooks=[hook])
    runner.train()
    assert hook.iter == 0
    assert_state_equal(hook.state, expected)
    assert hook.optim['state'] == {}


def test_resume_restores_iteration_weights_and_adam_state(trained, tmp_path):
    """resume: continues at iteration 4 with identical weights and Adam moments, and training
    4 + 2 iterations equals training 6 iterations in one go."""
    ckpt = osp.join(trained['work_dir'], 'iter_4.pth')
    hook = CaptureHook()
    resumed = make_runner(
        tmp_path / 'b', 'compat_resume', max_iters=6, load_from=ckpt, resume=True, hooks=[hook])
    resumed.train()

    assert hook.iter == 4
    assert_state_equal(hook.state, trained['state'])
    saved, restored = trained['optim']['state'], hook.optim['state']
    assert saved.keys() == restored.keys() and len(saved) > 0
    for idx in saved:
        assert torch.count_nonzero(saved[idx]['exp_avg']) > 0
        for key in ('exp_avg', 'exp_avg_sq', 'step'):
            torch.testing.assert_close(restored[idx][key], saved[idx][key], rtol=0, atol=0)
    assert resumed.iter == 6

    straight = make_runner(tmp_path / 'c', 'compat_straight', max_iters=6)
    straight.train()
    for k, v in final_state(straight).items():
        torch.testing.assert_close(final_state(resumed)[k], v, msg=k)


def test_auto_resume_uses_last_checkpoint(trained, tmp_path):
    import shutil
    work_dir = tmp_path / 'auto'
    shutil.copytree(trained['work_dir'], work_dir)
    last = osp.join(str(trained['work_dir']), 'iter_4.pth')
    assert open(work_dir / 'last_checkpoint').read() == last
    hook = CaptureHook()
    runner = make_runner(work_dir, 'compat_auto', max_iters=5, resume=True, hooks=[hook])
    runner.train()
    assert hook.iter == 4


# ------------------------------------------------------------------------------------------
# 2. atomic writes
# ------------------------------------------------------------------------------------------
def test_runner_checkpoints_leave_no_tmp_files(trained):
    names = sorted(os.listdir(trained['work_dir']))
    assert 'iter_2.pth' in names and 'iter_4.pth' in names
    assert not [n for n in names if n.endswith('.tmp')]
    pointer = open(osp.join(trained['work_dir'], 'last_checkpoint')).read()
    assert pointer.endswith('iter_4.pth') and osp.isfile(pointer)


def test_save_checkpoint_is_atomic(tmp_path):
    from mmengine.runner import save_checkpoint
    from mmengine.runner import runner as runner_module
    assert runner_module.save_checkpoint is save_checkpoint  # the runner uses the patched one
    path = tmp_path / 'sub' / 'epoch_1.pth'
    save_checkpoint({'w': torch.arange(4.)}, str(path))
    assert torch.load(path)['w'].tolist() == [0, 1, 2, 3]
    assert os.listdir(path.parent) == ['epoch_1.pth']


def _crashing_save(obj, f, *args, **kwargs):
    f.write(b'PK\x03\x04 partial checkpoint')
    raise RuntimeError('simulated crash during torch.save')


def test_crash_during_save_leaves_no_final_file(tmp_path, monkeypatch):
    from mmengine.runner import save_checkpoint
    path = tmp_path / 'epoch_2.pth'
    monkeypatch.setattr(torch, 'save', _crashing_save)
    with pytest.raises(RuntimeError, match='simulated crash'):
        save_checkpoint({'w': torch.ones(2)}, str(path))
    assert os.listdir(tmp_path) == []


def test_crash_during_save_keeps_previous_file(tmp_path, monkeypatch):
    from mmengine.runner import save_checkpoint
    path = tmp_path / 'epoch_2.pth'
    save_checkpoint({'w': torch.ones(2)}, str(path))
    monkeypatch.setattr(torch, 'save', _crashing_save)
    with pytest.raises(RuntimeError):
        save_checkpoint({'w': torch.zeros(2)}, str(path))
    monkeypatch.undo()
    assert torch.load(path)['w'].tolist() == [1.0, 1.0]
    assert os.listdir(tmp_path) == ['epoch_2.pth']


def test_last_checkpoint_pointer_write_is_atomic(tmp_path):
    from mmengine.hooks import checkpoint_hook
    pointer = tmp_path / 'last_checkpoint'
    pointer.write_text('/old/iter_2.pth')
    with pytest.raises(KeyboardInterrupt):
        with checkpoint_hook.open(str(pointer), 'w') as f:
            f.write('/new/iter_')
            raise KeyboardInterrupt
    assert pointer.read_text() == '/old/iter_2.pth'
    assert os.listdir(tmp_path) == ['last_checkpoint']
    with checkpoint_hook.open(str(pointer), 'w') as f:
        f.write('/new/iter_4.pth')
    with checkpoint_hook.open(str(pointer)) as f:  # reads use the builtin open
        assert f.read() == '/new/iter_4.pth'


def test_atomic_write_rejects_read_mode(tmp_path):
    with pytest.raises(ValueError, match='write modes'):
        with atomic_write(str(tmp_path / 'x'), 'r'):
            pass


# ------------------------------------------------------------------------------------------
# 3. idempotence
# ------------------------------------------------------------------------------------------
def test_patches_are_idempotent():
    from mmengine.dist import init_dist
    from mmengine.hooks import checkpoint_hook
    from mmengine.runner import runner as runner_module
    from mmengine.runner.checkpoint import CheckpointLoader
    before = (runner_module.save_checkpoint, runner_module.init_dist, checkpoint_hook.open,
              CheckpointLoader._schemes[''])
    apply_compat_patches()
    apply_compat_patches()
    after = (runner_module.save_checkpoint, runner_module.init_dist, checkpoint_hook.open,
             CheckpointLoader._schemes[''])
    assert before == after
    assert init_dist is runner_module.init_dist
    # one wrapper level around the original mmengine functions, never a wrapper of a wrapper
    for fn in (runner_module.save_checkpoint, runner_module.init_dist):
        assert getattr(fn, '__protocal_compat__')
        assert not getattr(fn.__wrapped__, '__protocal_compat__', False)


# ------------------------------------------------------------------------------------------
# 4. CPU distributed
# ------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@cpu_only
def test_init_dist_on_cpu_uses_gloo_and_cpu_ddp():
    """mmengine's init_dist (default backend nccl) + DDP wrapping with device_ids, as the runner
    does it, in a one-process group in a subprocess (keeps this process clean)."""
    script = textwrap.dedent("""
        import torch, torch.nn as nn, torch.distributed as dist
        import protocal
        from mmengine.dist import init_dist
        from mmengine.model import BaseModel
        from mmengine.registry import MODEL_WRAPPERS
        from mmengine.optim import OptimWrapper

        class Net(BaseModel):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 1)
            def forward(self, inputs, mode='tensor'):
                return dict(loss=self.fc(inputs).pow(2).mean())

        init_dist('pytorch')
        print('backend', dist.get_backend())
        model = MODEL_WRAPPERS.build(dict(type='CPUDistributedDataParallel'),
                                     default_args=dict(module=Net(), device_ids=[0]))
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
        log = model.train_step(dict(inputs=torch.ones(3, 2)), optim)
        print('wrapper', type(model).__name__, 'loss_finite', bool(torch.isfinite(log['loss'])))
        dist.destroy_process_group()
    """)
    env = dict(os.environ, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(_free_port()))
    proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'backend gloo' in proc.stdout
    assert 'wrapper CPUDistributedDataParallel loss_finite True' in proc.stdout


def test_cuda_set_device_is_restored():
    original = torch.cuda.set_device
    with compat._cuda_set_device_disabled():
        assert torch.cuda.set_device is not original
        torch.cuda.set_device(0)  # no-op
    assert torch.cuda.set_device is original


def test_cpu_ddp_is_a_registered_model_wrapper():
    from mmengine.model import MMDistributedDataParallel, is_model_wrapper
    from mmengine.registry import MODEL_WRAPPERS
    assert MODEL_WRAPPERS.get('CPUDistributedDataParallel') is CPUDistributedDataParallel
    assert issubclass(CPUDistributedDataParallel, MMDistributedDataParallel)
    assert is_model_wrapper(object.__new__(CPUDistributedDataParallel))


# ------------------------------------------------------------------------------------------
# 5. adapt_cfg_to_device
# ------------------------------------------------------------------------------------------
def _cfg(**kwargs):
    base = dict(
        model=dict(
            type='PointDetector',
            backbone=dict(type='ResNet', norm_cfg=dict(type='SyncBN', requires_grad=True)),
            neck=[dict(type='FPN', norm_cfg=dict(type='MMSyncBN')), dict(type='X')],
            head=dict(type='HeatmapPointHead', norm_cfg=dict(type='BN'))),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='Adam')),
        env_cfg=dict(dist_cfg=dict(backend='nccl')),
        launcher='none')
    base.update(kwargs)
    return Config(base)


@cpu_only
def test_adapt_sets_gloo_and_converts_syncbn(monkeypatch):
    messages = []
    monkeypatch.setattr(compat, '_log', lambda msg, level=logging.INFO: messages.append(
        (msg, level)))
    cfg = adapt_cfg_to_device(_cfg())
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert cfg.model.neck[0].norm_cfg.type == 'BN'
    assert cfg.model.head.norm_cfg.type == 'BN'
    assert 'model_wrapper_cfg' not in cfg  # not distributed
    assert len(messages) == 1 and messages[0][1] == logging.WARNING
    assert 'model.backbone.norm_cfg.type' in messages[0][0]
    assert 'model.neck[0].norm_cfg.type' in messages[0][0]


@cpu_only
def test_adapt_keeps_explicit_backend_and_fills_missing_env_cfg():
    cfg = adapt_cfg_to_device(_cfg(env_cfg=dict(dist_cfg=dict(backend='mpi'))))
    assert cfg.env_cfg.dist_cfg.backend == 'mpi'
    cfg = Config(dict(model=dict(type='X')))
    assert adapt_cfg_to_device(cfg).env_cfg.dist_cfg.backend == 'gloo'


@cpu_only
def test_adapt_distributed_selects_cpu_ddp():
    cfg = adapt_cfg_to_device(_cfg(launcher='pytorch', find_unused_parameters=True))
    assert cfg.model_wrapper_cfg == dict(
        type='CPUDistributedDataParallel', broadcast_buffers=False, find_unused_parameters=True)
    cfg = adapt_cfg_to_device(
        _cfg(launcher='slurm', model_wrapper_cfg=dict(detect_anomalous_params=True)))
    assert cfg.model_wrapper_cfg == dict(
        type='CPUDistributedDataParallel', detect_anomalous_params=True)


@cpu_only
@pytest.mark.parametrize('extra, match', [
    (dict(sync_bn='torch'), 'sync_bn'),
    (dict(optim_wrapper=dict(type='AmpOptimWrapper', optimizer=dict(type='SGD'))), 'CUDA'),
    (dict(launcher='pytorch', model_wrapper_cfg=dict(type='MMFullyShardedDataParallel')),
     'MMFullyShardedDataParallel'),
    (dict(launcher='pytorch', model_wrapper_cfg=dict(device_ids=[0])), 'device_ids'),
])
def test_adapt_refuses_cuda_only_options(extra, match):
    with pytest.raises(ValueError, match=match):
        adapt_cfg_to_device(_cfg(**extra))
