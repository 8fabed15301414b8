"""PointDetector + heads: training losses, predictions, rescaling and sliding-window inference."""
import math

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

import protocal  # noqa: F401
from protocal.models.detectors.point_detector import owned_ranges, tile_starts

DEMO_MODEL = 'configs/_base_/models/heatmap_point_r18_fpn.py'


def _sample(points, labels, shape, annotated=None, scale_factor=(1.0, 1.0)):
    sample = DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                         batch_input_shape=shape, scale_factor=scale_factor))
    gt = InstanceData()
    gt.points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
    gt.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    gt.annotated = (torch.ones(len(gt.labels), dtype=torch.bool) if annotated is None else
                    torch.as_tensor(annotated, dtype=torch.bool))
    sample.gt_instances = gt
    return sample


def _build(loss=None, **head):
    cfg = Config.fromfile(DEMO_MODEL)
    if loss is not None:
        cfg.model.head.loss_heatmap = loss
    cfg.model.head.update(head)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


LOSSES = {
    'plain': dict(type='SoftCrossEntropyLoss'),
    'sel': dict(type='SemanticEnergyLoss'),
    'pcl': dict(type='PrototypeCalibratedLoss'),
}


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_loss_finite_with_degenerate_annotations(name):
    """Mixed batch: normal image, image without annotated points, duplicate points, one class."""
    model = _build(LOSSES[name])
    model.train()
    shape = (64, 64)
    samples = [
        _sample([[10, 12], [40, 30], [50, 50]], [0, 1, 1], shape),
        _sample([[20, 20]], [1], shape, annotated=[False]),   # nothing annotated
        _sample([[30, 30], [30, 30]], [0, 0], shape),         # duplicates, one class only
        _sample(np.zeros((0, 2)), [], shape),                 # no points at all
    ]
    inputs = torch.rand(4, 3, *shape)
    losses = model.loss(inputs, samples)
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    assert torch.isfinite(total)
    total.backward()
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()


def test_prototypes_only_updated_for_seen_classes():
    model = _build(LOSSES['pcl'])
    model.train()
    bank = model.head.loss_heatmap.bank
    before = bank.prototypes.clone()
    shape = (64, 64)
    samples = [_sample([[10, 12], [40, 30]], [1, 1], shape), _sample([[5, 5]], [1], shape)]
    model.loss(torch.rand(2, 3, *shape), samples)
    after = bank.prototypes
    assert torch.equal(after[0], before[0]), 'class 0 was not seen: prototype must not move'
    assert not torch.equal(after[1], before[1])
    # prototypes are buffers: saved in checkpoints, never given to the optimizer
    state = model.state_dict()
    assert any(k.endswith('bank.prototypes') for k in state)
    assert all('prototypes' not in n for n, _ in model.named_parameters())


def test_training_reduces_plain_loss():
    model = _build(LOSSES['plain'])
    model.train()
    shape = (64, 64)
    samples = [_sample([[16, 16], [48, 40]], [0, 1], shape)]
    inputs = torch.rand(1, 3, *shape)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(8):
        loss = sum(model.loss(inputs, samples).values())
        first = loss.item() if first is None else first
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.8 * first


def test_predict_rescales_points_to_original_image():
    model = _build()
    model.eval()
    shape = (64, 64)
    logits = torch.full((1, 3, 64, 64), -10.0)
    logits[:, 0] = 10.0
    logits[0, 1, 20, 30] = 20.0  # class 0 peak at x=30, y=20 in the resized image
    model.head.forward = lambda feats: (logits, None)
    sample = _sample(np.zeros((0, 2)), [], shape, scale_factor=(0.5, 0.5))
    sample.set_metainfo(dict(ori_shape=(128, 128)))
    out = model.predict(torch.zeros(1, 3, 64, 64), [sample])[0]
    pred = out.pred_instances
    assert pred.labels.tolist() == [0]
    # pixel-centre convention: x_ori = (x + 0.5) / s - 0.5
    assert pred.points.tolist() == [[60.5, 40.5]]
    assert math.isclose(float(pred.scores[0]), 1.0, abs_tol=1e-3)


def test_predict_ignores_padding():
    model = _build()
    model.eval()
    logits = torch.full((1, 3, 64, 64), -10.0)
    logits[:, 0] = 10.0
    logits[0, 2, 10, 10] = 20.0
    logits[0, 2, 50, 50] = 20.0  # in the padding: the real image is 40x40
    model.head.forward = lambda feats: (logits, None)
    sample = _sample(np.zeros((0, 2)), [], (40, 40))
    pred = model.predict(torch.zeros(1, 3, 64, 64), [sample])[0].pred_instances
    assert pred.points.tolist() == [[10.0, 10.0]]
    assert pred.labels.tolist() == [1]


def test_tile_geometry():
    assert tile_starts(100, 128, 96) == [0]
    assert tile_starts(300, 128, 96) == [0, 96, 172]
    ranges = owned_ranges([0, 96, 172], 128, 300)
    assert ranges[0][0] == float('-inf') and ranges[-1][1] == float('inf')
    # boundaries half-way between tile centres, contiguous
    assert ranges[0][1] == ranges[1][0] == (64 + 160) / 2
    assert ranges[1][1] == ranges[2][0]


def _pixel_model(min_distance=3):
    """A detector whose head turns input pixels straight into logits (no receptive field), so
    whole-image and tiled inference must give exactly the same peaks."""
    model = _build(codec=dict(type='PointHeatmapCodec', radius=4, score_thr=0.3,
                              min_distance=min_distance))
    model.eval()
    model.extract_feat = lambda x: (x, )
    model.head.forward = lambda feats: (torch.log(feats[0].clamp_min(1e-6)), None)
    return model


def _prob_image(height, width, num_points, seed):
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(0, width - 1, num_points), rng.uniform(0, height - 1, num_points)],
                   1).astype(np.float32)
    labels = rng.integers(0, 2, num_points)
    from protocal.codecs import PointHeatmapCodec
    heat = PointHeatmapCodec(num_classes=2, radius=4).encode(pts, labels, (height, width))
    heat[1:] *= torch.from_numpy(rng.uniform(0.5, 1.0, (2, height, width))).float()
    heat[0] = 1 - heat[1:].sum(0).clamp(max=1)
    return heat.clamp_min(0)[None]


@pytest.mark.parametrize('seed', [0, 1])
def test_slide_inference_matches_whole_image(seed):
    height, width = 150, 203
    probs = _prob_image(height, width, 60, seed)
    sample = _sample(np.zeros((0, 2)), [], (height, width))
    model = _pixel_model()
    whole = model.predict(probs, [sample.clone()])[0].pred_instances
    model.test_cfg.update(mode='slide', crop_size=64, stride=40, tiles_per_batch=3)
    model.data_preprocessor.pad_size_divisor = 1
    tiled = model.predict(probs, [sample.clone()])[0].pred_instances

    def as_set(pred):
        return sorted(zip(pred.points[:, 0].tolist(), pred.points[:, 1].tolist(),
                          pred.labels.tolist()))

    assert len(whole) > 20
    assert as_set(tiled) == as_set(whole)


def test_vig_head_end_to_end_shapes():
    cfg = Config.fromfile('configs/_base_/models/pcl_vig-s.py')
    # a tiny ViG keeps the test fast; the paper's ViG-S is checked in tests/test_vig.py
    cfg.model.backbone.update(embed_dims=32, num_blocks=2, k=3)
    cfg.model.head.update(in_channels=32, num_blocks=2, embed_dims=8)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    shape = (128, 128)
    samples = [_sample([[10, 12], [40, 30]], [0, 1], shape), _sample([[5, 100]], [1], shape)]
    losses = model.loss(torch.rand(2, 3, *shape), samples)
    assert set(losses) == {'loss_ce', 'loss_sfl', 'loss_el'}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    logits, embed = model._forward(torch.rand(1, 3, *shape))
    assert logits.shape == (1, 3, 128, 128) and embed.shape == (1, 8, 4, 4)


def test_release_freed_memory_is_safe_to_call_repeatedly():
    from protocal.utils import release_freed_memory
    for _ in range(3):
        assert release_freed_memory() is None
