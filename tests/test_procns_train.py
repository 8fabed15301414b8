"""ProCNS segmentor, pseudo-label store and hook through the standard tools (mmseg scope).

The demo config trains 8 iterations on one 64x64-cropped DSB2018 tile: EMA refreshes in warm-up,
stage 2 from iteration 2 (pseudo-labels, ANPM curve), checkpoints at 4 (stage 2) and 8.
"""
import importlib.util
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

from protocal.models.segmentors.pseudo_label_store import PseudoLabelStore
from protocal.models.segmentors.sparse_label_segmentor import joint_rot_flip, joint_rotate

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(ROOT, 'configs', 'procns', 'procns_unet_demo-cpu_dsb2018-nuclei_point.py')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'protocal_tool_{name}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = load_tool('train')
test_tool = load_tool('test')


# ------------------------------------------------------------------------------------------
# store and augmentation units
# ------------------------------------------------------------------------------------------
def test_store_ema_gather_and_state_round_trip():
    store = PseudoLabelStore(num_classes=2, ema_alpha=0.2)
    p = torch.tensor([0.3, 0.7]).view(2, 1, 1).expand(2, 4, 6).clone()
    for _ in range(3):
        store.ema_update(5, p, 'tile_a')
    assert torch.allclose(store.ema[5], (1 - 0.8 ** 3) * p)
    assert (store.pseudo[5] == 1).all()
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[0, 0] = True
    store.mask_pixels(5, mask)
    pseudo, ema, present = store.gather([5, 9], [(0, 2, 0, 3), (0, 2, 0, 3)], (3, 4),
                                        with_ema=True)
    assert present.tolist() == [True, False]
    assert pseudo[0, 0, 0] == 255 and pseudo[0, 1, 2] == 1 and (pseudo[0, 2:] == 255).all()
    assert (pseudo[1] == 255).all() and ema[0, 1, 0, 0] == pytest.approx(0.7 * (1 - 0.8 ** 3))
    store.record_counts(torch.ones(2, 3))
    store.released[1] = True
    clone = PseudoLabelStore(num_classes=2)
    clone.load_state_dict(store.state_dict())
    for key, value in store.state_dict().items():
        other = clone.state_dict()[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            assert all(torch.equal(a, b) for a, b in zip(value, other)), key
        else:
            assert value == other, key
    with pytest.raises(ValueError, match='tile_b'):
        clone.check_sample_ids({5: 'tile_b'})
    with pytest.raises(ValueError, match='crop box'):
        store.gather([5], [(0, 9, 0, 3)], (9, 4))


def test_joint_augmentation_keeps_maps_aligned():
    labels = torch.randint(0, 3, (2, 16, 16))
    image = labels[:, None].float().repeat(1, 3, 1, 1)
    ema = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    rot = joint_rot_flip([image, labels, ema], k=1, flip_dim=-1)
    assert torch.equal(rot[0][:, 0].long(), rot[1])
    assert torch.equal(rot[2].argmax(1), rot[1])
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    img_r, maps, valid_r = joint_rotate(image, dict(sparse=labels, ema=ema), valid,
                                        torch.tensor([30.0, 0.0]), image_mode='nearest')
    inside = valid_r
    assert torch.equal(img_r[:, 0].long()[inside], maps['sparse'][inside])
    assert not valid_r[0].all() and valid_r[1].all()
    assert torch.equal(maps['sparse'][1], labels[1])


# ------------------------------------------------------------------------------------------
# end to end through tools/train.py and tools/test.py
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp('procns_train')
    train_tool.main([CFG, '--work-dir', str(work)])
    return work


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def test_train_runs_both_stages_and_checkpoints_the_store(trained):
    assert {'iter_4.pth', 'iter_8.pth'} <= set(os.listdir(trained))
    early, late = _load(trained / 'iter_4.pth'), _load(trained / 'iter_8.pth')
    for ckpt in (early, late):
        state = ckpt['pseudo_label_store']
        assert state['indices'].tolist() == [0] and state['num_refreshes'] == 1
        assert state['pseudo'][0].shape == (256, 320)
    assert early['pseudo_label_store']['history'].shape[0] == 2  # stage-2 iterations 2, 3
    assert late['pseudo_label_store']['history'].shape[0] == 6
    assert 'store' not in ''.join(late['state_dict'])  # the store is not a model weight


def _equal_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), key
        elif isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
            assert len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y)), key
        else:
            assert x == y, key


def test_resume_in_stage_2_restores_the_store_exactly(trained, tmp_path):
    ckpt = str(trained / 'iter_4.pth')
    args = train_tool.parse_args([CFG, '--work-dir', str(tmp_path), '--resume', ckpt])
    cfg = train_tool.build_config(args)
    from protocal.utils import build_runner
    runner = build_runner(cfg)
    runner.load_or_resume()
    assert runner.iter == 4
    _equal_state(runner.model.store.state_dict(), _load(ckpt)['pseudo_label_store'])
    # training continues in stage 2 from the restored state (no new warm-up refresh)
    runner.train()
    state = runner.model.store.state_dict()
    assert state['num_refreshes'] == 1 and state['history'].shape[0] == 6
    assert runner.model.stage == 2


def test_test_tool_reports_dice_and_hd95(trained, tmp_path):
    out = tmp_path / 'metrics.json'
    test_tool.main([CFG, str(trained / 'iter_8.pth'), '--work-dir', str(tmp_path),
                    '--metrics-json', str(out)])
    with open(out) as f:
        metrics = json.load(f)
    for key in ('mDice', 'mHD95', 'mASD', 'Dice.nucleus'):
        assert key in metrics and metrics[key] == metrics[key]  # present, not NaN
    assert 0 <= metrics['mDice'] <= 1


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_two_processes_keep_identical_stores(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CFG, '2', '--work-dir', str(tmp_path),
         '--cfg-options', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    state = _load(tmp_path / 'iter_4.pth')['pseudo_label_store']
    assert state['indices'].tolist() == [0] and state['history'].shape[0] == 2
    # counts were summed over both processes (each saw its own batch)
    assert state['history'][:, :, 2].sum() > 0


def test_backbone_swap_config_trains_one_step():
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'procns',
                                   'procns_r18-fcn_300it_dsb2018-he_point.py'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.set_train_progress(0, 1)
    samples = []
    for b in range(2):
        sparse = torch.full((1, 64, 64), 255, dtype=torch.long)
        sparse[0, 10:14, 10:14] = 1
        sparse[0, 40:44, 40:44] = 0
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), sample_idx=b))
        sample.gt_sem_seg = PixelData(data=sparse)
        samples.append(sample)
    losses = model.loss(torch.randn(2, 3, 64, 64), samples)
    assert set(losses) == {'loss_pce', 'loss_prsa'}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
