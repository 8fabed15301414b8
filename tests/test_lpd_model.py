"""LPD segmentor: losses after warm-up, absent classes, prediction, and a tiny run of the tools."""
import json
import os.path as osp
import subprocess
import sys
import uuid

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from protocal.models.segmentors.wsss_postprocess import crf_available

TINY_MIT = dict(type='MixVisionTransformer', in_channels=3, embed_dims=8, num_stages=4,
                num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], patch_sizes=[7, 3, 3, 3],
                strides=[4, 2, 2, 1], sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3))

@pytest.fixture(autouse=True)
def _mmseg_scope():
    """LPD parts live in the mmseg registries (the shared conftest selects mmdet)."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    yield



def _model(head='proto', warmup=0, **kw):
    init_default_scope('mmseg')
    if head == 'proto':
        head_cfg = dict(type='LearnablePrototypeCAMHead', num_classes=3, num_prototypes=2,
                        in_channels=[8, 16, 32, 64], proto_dim=64)
        extra = dict(loss_sim=dict(type='PrototypeInfoNCELoss'),
                     loss_div=dict(type='PrototypeDiversityLoss'),
                     frozen_encoder=dict(backbone=dict(TINY_MIT), embed_dims=64,
                                         input_size=(32, 32)))
    else:
        head_cfg = dict(type='LinearCAMHead', num_classes=3, in_channels=[8, 16, 32, 64])
        extra = {}
    cfg = dict(type='LPDSegmentor', backbone=dict(TINY_MIT), head=head_cfg, warmup_iters=warmup,
               data_preprocessor=dict(type='SegDataPreProcessor', mean=[128] * 3, std=[64] * 3),
               **extra)
    cfg.update(kw)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match='no checkpoint') if head == 'proto' else _null():
        return MODELS.build(cfg)


class _null:

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def _samples(labels, size=64):
    out = []
    for lab in labels:
        ds = SegDataSample(metainfo=dict(ori_shape=(size, size), img_shape=(size, size)))
        ds.set_field(torch.tensor(lab, dtype=torch.float32), 'gt_cls_label')
        out.append(ds)
    return out


def test_lpd_losses_after_warmup_and_absent_class():
    model = _model(warmup=1)
    x = torch.randn(2, 3, 64, 64)
    samples = _samples([[1, 0, 0], [1, 0, 0]])  # classes 1, 2 absent from the batch
    # the iteration comes from the runner's MessageHub: use a fresh one (earlier tests ran
    # Runners whose hubs still hold their last iteration)
    hub = MessageHub.get_instance(f'test_lpd_warmup_{uuid.uuid4().hex}')
    assert MessageHub.get_current_instance() is hub
    hub.update_info('iter', 0)
    first = model.loss(x, samples)
    assert set(first) == {'loss_cls'}  # warm-up: L_cls only
    hub.update_info('iter', 1)
    losses = model.loss(x, samples)
    assert set(losses) == {'loss_cls', 'loss_sim', 'loss_div'}
    total = sum(losses.values())
    total.backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.isfinite(model.head.prototypes.grad).all()
    assert torch.isfinite(model.head.logit_scales[3].grad)
    # the frozen encoder is outside the module tree: no state_dict entry, no optimiser parameter
    assert not any('frozen' in k for k in model.state_dict())
    assert all(not p.requires_grad for p in model.frozen_encoder.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 200_000


def test_lpd_predict_gated_by_labels_with_tta():
    model = _model(test_cfg=dict(tta=True)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model.predict(x, _samples([[0, 1, 0]]))[0]
    pred = out.pred_sem_seg.data
    assert pred.shape == (1, 64, 64)
    assert set(pred.unique().tolist()) <= {1, 3}  # the labelled class or background (last)
    probs = out.seg_logits.data
    assert probs.shape == (4, 64, 64) and torch.allclose(probs.sum(0), torch.ones(64, 64))
    # predicted labels when no image label is given
    with torch.no_grad():
        free = model.predict(x, None)
    assert free[0].pred_sem_seg.data.shape == (1, 64, 64)


@pytest.mark.skipif(not crf_available(), reason='pydensecrf2 not installed')
def test_lpd_predict_with_crf():
    model = _model(test_cfg=dict(crf=True)).eval()
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 32, 32), _samples([[1, 0, 1]], 32))[0]
    assert set(out.pred_sem_seg.data.unique().tolist()) <= {0, 2, 3}


def test_plain_cam_baseline_and_config_errors():
    model = _model(head='linear')
    losses = model.loss(torch.randn(2, 3, 64, 64), _samples([[1, 0, 0], [0, 0, 1]]))
    assert set(losses) == {'loss_cls'}
    with pytest.raises(ValueError, match='need a prototype head'):
        _model(head='linear', loss_div=dict(type='PrototypeDiversityLoss'))
    with pytest.raises(KeyError, match='gt_cls_label'):
        model.loss(torch.randn(1, 3, 64, 64), [SegDataSample(metainfo=dict(img_path='x.png'))])


def _run(args):
    run = subprocess.run([sys.executable] + args, capture_output=True, text=True,
                         env=dict(__import__('os').environ, OMP_NUM_THREADS='2'))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return run


@pytest.mark.parametrize('config', ['lpd_mit-b0_demo-cpu_ebhi.py'])
def test_tiny_train_and_test_through_tools(tmp_path, config):
    work = str(tmp_path / 'w')
    small = ['train_dataloader.dataset.pipeline.1.scale=(64,64)',
             'val_dataloader.dataset.pipeline.1.scale=(64,64)',
             'test_dataloader.dataset.pipeline.1.scale=(64,64)',
             'train_dataloader.batch_size=2', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
             'model.warmup_iters=1', 'default_hooks.checkpoint.interval=2',
             'param_scheduler.0.end=2']
    _run(['tools/train.py', f'configs/lpd/{config}', '--work-dir', work, '--cfg-options'] + small)
    ckpt = osp.join(work, 'iter_2.pth')
    assert osp.isfile(ckpt)
    metrics = str(tmp_path / 'm.json')
    _run(['tools/test.py', f'configs/lpd/{config}', ckpt, '--work-dir', work, '--metrics-json',
          metrics, '--cfg-options'] + small)
    values = json.load(open(metrics))
    assert 0 <= values['mIoU'] <= 100 and 'IoU.Background' in values
    # stage 1 -> pseudo masks of the train split -> stage 2 (stock mmseg SegFormer) trains on them
    out = str(tmp_path / 'pm')
    run = _run(['tools/lpd/make_pseudo_masks.py', f'configs/lpd/{config}', ckpt, '--split',
                'train', '--out-dir', out, '--cfg-options'] + small[1:3])
    assert '"images": 24' in run.stdout
    stage2 = 'configs/lpd/stage2_segformer_mit-b0_demo-cpu_ebhi-pseudo.py'
    small2 = ['train_dataloader.dataset.pipeline.2.scale=(64,64)',
              'model.data_preprocessor.size=(64,64)',
              f'train_dataloader.dataset.seg_map_root={out}'] + small[1:]
    small2.remove('model.warmup_iters=1')
    _run(['tools/train.py', stage2, '--work-dir', str(tmp_path / 's2'), '--cfg-options'] + small2)
    assert osp.isfile(osp.join(str(tmp_path / 's2'), 'iter_2.pth'))


def test_frozen_encoder_local_checkpoint(tmp_path):
    from protocal.models.segmentors.lpd import FrozenImageEncoder
    init_default_scope('mmseg')
    src = FrozenImageEncoder(dict(TINY_MIT), embed_dims=64, seed=3)
    path = str(tmp_path / 'seg.pth')
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in src.backbone.state_dict().items()}),
               path)
    enc = FrozenImageEncoder(dict(TINY_MIT), embed_dims=64, checkpoint=path,
                             checkpoint_prefix='backbone.', seed=7)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    emb = enc(x)
    assert torch.allclose(emb, src(x)) and emb.shape == (1, 64)
    emb.sum().backward()  # gradients reach the (masked) image, not the frozen weights
    assert x.grad is not None and all(p.grad is None for p in enc.parameters())
    with pytest.raises(ValueError, match='does not match the backbone: missing'):
        FrozenImageEncoder(dict(TINY_MIT), embed_dims=64, checkpoint=path)  # wrong prefix
