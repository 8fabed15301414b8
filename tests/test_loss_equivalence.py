"""Issue 15: the fused heatmap losses equal the composed reference path, also on degenerate batches,
and stay finite under mixed precision.

The reference is the frozen pre-fusion code in ``tests/loss_reference_impl.py``. Values and
gradients must agree to 1e-6 (relative to the magnitude of the compared tensor).
"""
import copy
import math

import pytest
import torch

import loss_reference_impl as ref
from protocal.models.losses import (ExclusiveLoss, PrototypeCalibratedLoss, SemanticEnergyLoss,
                                    SoftCrossEntropyLoss)
from protocal.models.losses.ce import fused_soft_ce
from protocal.prototypes import interpolation_weights, node_masks_from_points

TOL = 1e-6


def assert_same(new, old, what='', atol=0.0):
    """max |new - old| <= TOL * max(|old|) (+ atol), and the same finiteness."""
    assert new.shape == old.shape, what
    assert torch.isfinite(new).all() and torch.isfinite(old).all(), what
    scale = max(old.detach().abs().max().item(), 1e-30) if old.numel() else 1.0
    err = (new.detach().double() - old.detach().double()).abs().max().item() if old.numel() else 0
    assert err <= TOL * scale + atol, f'{what}: max error {err:.3g} vs scale {scale:.3g}'


def make_batch(batch=2, classes=2, size=(64, 64), grid=(8, 8), dims=6, seed=0, points=6,
               valid=False, embed=None):
    """Random logits/embeddings, a rendered sparse target and node masks."""
    from protocal.codecs import PointHeatmapCodec
    gen = torch.Generator().manual_seed(seed)
    height, width = size
    pts, labels = [], []
    for b in range(batch):
        n = points if b else max(points - 2, 1)
        pts.append(torch.rand(n, 2, generator=gen) * torch.tensor([width - 1.0, height - 1.0]))
        labels.append(torch.randint(0, classes, (n,), generator=gen))
    target = PointHeatmapCodec(num_classes=classes, radius=5).encode_batch(pts, labels, size)
    stride = height / grid[0]
    masks = node_masks_from_points(pts, labels, classes, stride, grid)
    logits = (torch.randn(batch, classes + 1, height, width, generator=gen) * 2)
    if embed is None:
        embed = torch.randn(batch, dims, *grid, generator=gen)
    valid_mask = None
    if valid:
        valid_mask = torch.ones(batch, 1, height, width, dtype=torch.bool)
        valid_mask[0, :, height * 3 // 4:] = False
        valid_mask[-1, :, :, width // 2:] = False
    return logits.requires_grad_(True), target, embed.clone().requires_grad_(True), masks, \
        valid_mask


def build(kind, fused, classes=2, dims=6, **kwargs):
    if kind == 'plain':
        return SoftCrossEntropyLoss(fused=fused, **kwargs)
    if kind == 'sel':
        return SemanticEnergyLoss(fused=fused, **kwargs)
    if kind == 'el':
        return ExclusiveLoss(fused=fused, **kwargs)
    return PrototypeCalibratedLoss(num_classes=classes, embed_dims=dims, fused=fused,
                                   **kwargs).train()


def reference(kind, loss, logits, target, embed, masks, valid):
    if kind == 'plain':
        return ref.plain_ce(loss, logits, target, valid)
    if kind == 'el':
        return {'loss_el': ref.exclusive_loss(loss, logits, target, valid)}
    fn = ref.sel_total if kind == 'sel' else ref.pcl_total
    return fn(loss, logits, target, embed, masks, valid)


def run(kind, loss, logits, target, embed, masks, valid, use_reference):
    if use_reference:
        out = reference(kind, loss, logits, target, embed, masks, valid)
    elif kind == 'el':
        out = {'loss_el': loss(logits, target, valid)}
    else:
        out = loss(logits, target, embed=embed, node_masks=masks, valid_mask=valid)
    total = sum(out.values())
    grads = torch.autograd.grad(total, [logits, embed], allow_unused=True)
    return out, grads


def compare(kind, batch_args, embed_atol=0.0, **loss_kwargs):
    logits, target, embed, masks, valid = batch_args
    classes = target.shape[1] - 1
    fused = build(kind, True, classes, embed.shape[1], **loss_kwargs)
    old = build(kind, False, classes, embed.shape[1], **loss_kwargs)
    old.load_state_dict(fused.state_dict())
    new_out, new_grads = run(kind, fused, logits, target, embed, masks, valid, False)
    ref_out, ref_grads = run(kind, old, logits, target, embed, masks, valid, True)
    assert list(new_out) == list(ref_out)
    for key in ref_out:
        assert_same(new_out[key], ref_out[key], key)
    for name, new, old_grad in zip(('logits', 'embed'), new_grads, ref_grads):
        if old_grad is None:
            assert new is None or not new.abs().any(), name
            continue
        assert_same(new, old_grad, f'd/d{name}', atol=embed_atol if name == 'embed' else 0.0)
    if kind == 'pcl':  # the EMA update saw the same features
        torch.testing.assert_close(fused.bank.prototypes, old.bank.prototypes, rtol=0, atol=0)
    return new_out, new_grads


@pytest.mark.parametrize('kind', ['plain', 'sel', 'pcl', 'el'])
@pytest.mark.parametrize('upsample', ['bilinear', 'nearest'])
@pytest.mark.parametrize('valid', [False, True])
def test_fused_equals_reference_random(kind, upsample, valid):
    kwargs = {} if kind in ('plain', 'el') else dict(energy_upsample=upsample)
    if kind in ('plain', 'el') and upsample == 'nearest':
        pytest.skip('no energy to upsample')
    compare(kind, make_batch(valid=valid, seed=3), **kwargs)


@pytest.mark.parametrize('kind', ['sel', 'pcl'])
def test_fused_equals_reference_odd_sizes_and_options(kind):
    # grid that does not divide the image, three foreground classes, detached energies,
    # reference-compat options
    batch = make_batch(batch=3, classes=3, size=(40, 56), grid=(5, 7), dims=4, seed=5, points=9)
    if kind == 'sel':
        compare(kind, batch, detach_energy=True,
                sfl=dict(type='StretchedFeatureLoss', tau=3.0, weight_mode='pcl',
                         reference_compat_weight=True))
    else:
        compare(kind, batch, detach_energy=True, prototype_similarity='cosine01',
                exclusive=dict(type='ExclusiveLoss', reference_compat_negative_bg=True))


def test_fused_equals_reference_chunk_boundaries():
    """Row blocks of one row and of the whole image give the same sums."""
    logits, target, embed, masks, _ = make_batch(seed=7)
    energy = torch.rand(2, 3, 8, 8, requires_grad=True)
    expected = ref.energy_weighted_ce(logits, target, energy.flatten(2), (8, 8), None,
                                      'bilinear', False)
    g_ref = torch.autograd.grad(expected, [logits, energy])
    for chunk in (1, 3 * 64 * 5, 1 << 30):
        ce, _ = fused_soft_ce(logits, target, energy, chunk_elems=chunk)
        assert_same(ce, expected, f'chunk {chunk}')
        for new, old in zip(torch.autograd.grad(ce, [logits, energy]), g_ref):
            assert_same(new, old, f'grad chunk {chunk}')


def test_interpolation_weights_reproduce_interpolate():
    grid = torch.rand(2, 3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for mode in ('bilinear', 'nearest'):
        a_h = interpolation_weights(5, 37, mode).double()
        a_w = interpolation_weights(7, 64, mode).double()
        kwargs = dict(align_corners=False) if mode == 'bilinear' else {}
        expected = torch.nn.functional.interpolate(grid, size=(37, 64), mode=mode, **kwargs)
        torch.testing.assert_close(a_h @ grid @ a_w.t(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match='mode'):
        interpolation_weights(3, 6, 'bicubic')


def test_energy_gradient_is_at_least_as_accurate_as_reference():
    """With many pixels per node the reference's float32 accumulation drifts by ~1e-6; the fused
    path accumulates node sums in float64 and is closer to a float64 evaluation."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 96, 96, generator=gen, dtype=torch.float64) * 3
    target = torch.rand(2, 3, 96, 96, generator=gen, dtype=torch.float64)
    energy = torch.rand(2, 3, 3, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    lp = torch.log_softmax(logits, 1).clamp(min=ref.LOG_PROB_FLOOR)
    pix = torch.nn.functional.interpolate(energy, size=(96, 96), mode='bilinear',
                                          align_corners=False)
    truth = torch.autograd.grad(((-target * lp) * pix).sum(1).mean(), energy)[0]
    e32 = energy.detach().float().requires_grad_(True)
    old = torch.autograd.grad(
        ref.energy_weighted_ce(logits.float(), target.float(), e32.flatten(2), (3, 3), None,
                               'bilinear', False), e32)[0]
    new = torch.autograd.grad(fused_soft_ce(logits.float(), target.float(), e32)[0], e32)[0]
    err_old = (old.double() - truth).abs().max()
    err_new = (new.double() - truth).abs().max()
    assert err_new <= err_old + 1e-12
    assert err_new <= 1e-6 * truth.abs().max()


def degenerate_batch():
    """4 images: no annotation; one class only; duplicates on one pixel; both classes."""
    points = [
        torch.zeros(0, 2),
        torch.tensor([[3.0, 3.0], [12.0, 12.0]]),
        torch.tensor([[5.0, 5.0], [5.0, 5.0], [5.0, 5.0]]),
        torch.tensor([[2.0, 2.0], [13.0, 2.0]]),
    ]
    labels = [
        torch.zeros(0, dtype=torch.long),
        torch.tensor([0, 0]),
        torch.tensor([1, 1, 1]),
        torch.tensor([0, 1]),
    ]
    return points, labels


@pytest.mark.parametrize('features', ['random', 'identical', 'zero'])
@pytest.mark.parametrize('subset', [[0], [1], [2], [0, 1], [0, 1, 2, 3]])
@pytest.mark.parametrize('kind', ['sel', 'pcl', 'plain'])
def test_fused_equals_reference_on_degenerate_batches(kind, subset, features):
    """No labelled node, one class absent, duplicated points, identical or zero features: the
    fused path gives the reference's finite values and gradients."""
    from protocal.codecs import PointHeatmapCodec
    all_points, all_labels = degenerate_batch()
    points = [all_points[i] for i in subset]
    labels = [all_labels[i] for i in subset]
    target = PointHeatmapCodec(num_classes=2, radius=3).encode_batch(points, labels, (16, 16))
    masks = node_masks_from_points(points, labels, 2, stride=4, grid_hw=(4, 4))
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(len(subset), 3, 16, 16, generator=gen).requires_grad_(True)
    if features == 'random':
        embed = torch.randn(len(subset), 6, 4, 4, generator=gen)
    elif features == 'identical':
        embed = torch.ones(len(subset), 6, 4, 4)
    else:
        embed = torch.zeros(len(subset), 6, 4, 4)
    # identical features: the true embedding gradient is 0, both paths return float noise (~1e-8)
    new_out, new_grads = compare(kind, (logits, target, embed.requires_grad_(True), masks, None),
                                 embed_atol=1e-7 if features == 'identical' else 0.0)
    assert all(torch.isfinite(v) for v in new_out.values())
    assert all(g is None or torch.isfinite(g).all() for g in new_grads)


def test_exclusive_loss_without_discs_is_zero_and_connected():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.zeros(2, 3, 8, 8)
    target[:, 0] = 1
    loss = ExclusiveLoss(fused=True)(logits, target)
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match='same shape'):
        fused_soft_ce(logits, target[:, :2])
    with pytest.raises(ValueError, match='node_energy'):
        fused_soft_ce(logits, target, torch.ones(2, 2, 4, 4))


def test_probability_floor_gradient_matches_reference():
    """Pixels whose log-probability is below ln(1e-10) get the clipped (zero) gradient."""
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1, :2] = -40.0  # P_1 ~ 4e-18 < 1e-10 on the top half
    logits.requires_grad_(True)
    target = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    energy = torch.rand(1, 1, 2, 2, requires_grad=True)
    expected = ref.energy_weighted_ce(logits, target, energy.flatten(2), (2, 2), None,
                                      'bilinear', False)
    value, _ = fused_soft_ce(logits, target, energy)
    assert_same(value, expected)
    for new, old in zip(torch.autograd.grad(value, [logits, energy]),
                        torch.autograd.grad(expected, [logits, energy])):
        assert_same(new, old)


# ----------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize('kind', ['sel', 'pcl'])
def test_bf16_autocast_cpu_is_finite_and_calibration_stays_fp32(kind):
    """Under CPU bf16 autocast (what AmpOptimWrapper does on GPU) the loss takes bf16 logits and
    embeddings, returns float32 values and bf16 gradients, all finite; energies, SFL and the
    cross-entropy are computed in float32 on the (bf16-rounded) inputs."""
    logits, target, embed, masks, _ = make_batch(seed=11)
    logits16 = logits.detach().bfloat16().requires_grad_(True)
    embed16 = (embed.detach() * 50).bfloat16().requires_grad_(True)  # large norms: no overflow
    loss = build(kind, True)
    loss32 = copy.deepcopy(loss)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = loss(logits16, target, embed=embed16, node_masks=masks)
    total = sum(out.values())
    total.backward()
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
    assert logits16.grad.dtype == torch.bfloat16 and torch.isfinite(logits16.grad).all()
    assert embed16.grad.dtype == torch.bfloat16 and torch.isfinite(embed16.grad).all()
    # same numbers as a float32 evaluation of the bf16-rounded inputs: nothing ran in bf16
    out32 = loss32(logits16.detach().float(), target, embed=embed16.detach().float(),
                   node_masks=masks)
    for key in out32:
        assert out[key].item() == pytest.approx(out32[key].item(), rel=1e-6, abs=1e-7), key


@pytest.mark.parametrize('kind', ['sel', 'pcl'])
def test_bf16_autocast_training_steps_stay_finite(kind):
    """A few Adam steps of a tiny conv net under CPU bf16 autocast: finite losses and weights."""
    torch.manual_seed(0)
    logits, target, _, masks, _ = make_batch(size=(32, 32), grid=(4, 4), seed=2)
    net = torch.nn.Conv2d(3, 3 + 6, 3, padding=1)
    pool = torch.nn.AvgPool2d(8)
    image = torch.randn(2, 3, 32, 32)
    loss = build(kind, True)
    optim = torch.optim.Adam(net.parameters(), lr=0.05)
    values = []
    for _ in range(5):
        optim.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = net(image)
            logits16, embed16 = out[:, :3], pool(out[:, 3:]) * 100
            total = sum(loss(logits16, target, embed=embed16, node_masks=masks).values())
        total.backward()
        optim.step()
        values.append(total.item())
    assert all(math.isfinite(v) for v in values)
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
@pytest.mark.parametrize('kind', ['sel', 'pcl'])
def test_amp_optim_wrapper_cuda(kind, dtype):
    """The configs' AmpOptimWrapper path (dynamic loss scale) trains SEL/PCL without NaN/inf."""
    from mmengine.optim import AmpOptimWrapper
    torch.manual_seed(0)
    logits, target, _, masks, _ = make_batch(size=(64, 64), grid=(8, 8), seed=2)
    net = torch.nn.Conv2d(3, 3 + 6, 3, padding=1).cuda()
    pool = torch.nn.AvgPool2d(8)
    image = torch.randn(2, 3, 64, 64, device='cuda')
    loss = build(kind, True).cuda()
    wrapper = AmpOptimWrapper(optimizer=torch.optim.Adam(net.parameters(), lr=0.01),
                              dtype=dtype)
    for _ in range(5):
        with wrapper.optim_context(net):
            out = net(image)
            total = sum(loss(out[:, :3], target.cuda(), embed=pool(out[:, 3:]) * 100,
                             node_masks=masks.cuda()).values())
        assert torch.isfinite(total)
        wrapper.update_params(total)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    ce = fused_soft_ce(logits.cuda(), target.cuda())[0]
    assert ce.item() == pytest.approx(ref.plain_ce(SoftCrossEntropyLoss(), logits.detach(),
                                                   target)['loss_ce'].item(), rel=1e-5)
