"""ProCNS losses, prototype/affinity extensions and ANPM: hand-computed values on tiny tensors."""
import math

import numpy as np
import pytest
import torch

from protocal.models.losses.procns import (ProCNSLoss, anpm_noise_mask, lwlr_smooth,
                                           masked_soft_dice_loss, partial_cross_entropy,
                                           prototype_refined_logits, saturation_epoch,
                                           segmentation_dice_counts, soft_pseudo_targets)
from protocal.models.losses.wsl_baselines import (EMAPseudoLabelLoss, EntropyMinimizationLoss,
                                                  GatedCRFLoss, PartialCELoss,
                                                  TotalVariationLoss)
from protocal.prototypes import (downsample_label_masks, label_map_prototypes,
                                 local_affinity_kernel, local_potts_loss, potts_affinity_loss,
                                 prototype_class_affinity)


def _row(values):
    """(C, W) nested list -> (1, C, 1, W) tensor."""
    return torch.tensor(values, dtype=torch.float32)[None, :, None, :]


def test_partial_ce_hand_values_and_empty():
    logits = _row([[0.0, 0.0, 5.0], [0.0, math.log(3), -5.0]])
    labels = torch.tensor([[[0, 1, 255]]])
    expected = (math.log(2) + math.log(4 / 3)) / 2
    assert partial_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    empty = torch.full((1, 1, 3), 255)
    logits.requires_grad_(True)
    loss = partial_cross_entropy(logits, empty)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


def test_prototype_refined_logits_hand_values():
    feats = _row([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # pixel features (1,0), (0,1), (1,1)
    logits = _row([[2.0, 1.0, 4.0], [-1.0, 3.0, -2.0]])
    labels = torch.tensor([[[0, 1, 255]]])
    refined, affinity = prototype_refined_logits(logits, [feats], labels, 2, per_sample=(True,))
    assert torch.allclose(affinity[0, :, 0, :], torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]),
                          atol=1e-6)
    assert torch.allclose(refined[0, :, 0, :], torch.tensor([[2.0, 0.0, 2.0], [0.0, 3.0, -1.0]]),
                          atol=1e-6)
    # gradient reaches the logits only through A (no gradient into the features)
    logits.requires_grad_(True)
    feats.requires_grad_(True)
    refined, _ = prototype_refined_logits(logits, [feats], labels, 2, per_sample=(True,))
    refined.sum().backward()
    assert feats.grad is None
    assert torch.allclose(logits.grad[0, :, 0, :], affinity[0, :, 0, :])


def test_prototypes_batch_vs_sample_and_absent_class():
    feats = torch.tensor([[[[2.0, 0.0]]], [[[4.0, 0.0]]]])  # (2, 1, 1, 2)
    labels = torch.tensor([[[0, 255]], [[0, 255]]])
    masks = downsample_label_masks(labels, 2, (1, 2))
    per_img, present = label_map_prototypes(feats, masks, per_sample=True)
    assert per_img[:, 0, 0].tolist() == [2.0, 4.0] and not present[:, 1].any()
    shared, shared_present = label_map_prototypes(feats, masks, per_sample=False)
    assert shared[0, 0].item() == 3.0 and shared[1, 0].item() == 0.0
    assert shared_present.tolist() == [True, False]
    # absent class -> zero prototype -> cosine 0 -> no NaN; a pixel with no positive cosine -> A = 0
    embed = torch.tensor([[[[1.0, -1.0]]]])
    affinity = prototype_class_affinity(embed, shared)
    assert torch.isfinite(affinity).all()
    assert affinity[0, :, 0, 0].tolist() == [1.0, 0.0]
    assert affinity[0, :, 0, 1].tolist() == [0.0, 0.0]


def test_label_downsampling_any_keeps_points():
    labels = torch.full((1, 8, 8), 255)
    labels[0, 1, 1] = 1
    nearest = downsample_label_masks(labels, 2, (1, 1), 'nearest')
    anyhit = downsample_label_masks(labels, 2, (1, 1), 'any')
    assert not nearest[0, 1].any() and anyhit[0, 1, 0, 0]


def _toy_kernel_inputs():
    image = torch.tensor([[[[0.0, 0.0, 1.0]]]])
    probs = _row([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])
    dest = torch.tensor([[[False, True, True]]])
    return image, probs, dest


def test_local_kernel_and_potts_loss_hand_values():
    image, probs, dest = _toy_kernel_inputs()
    kernel = local_affinity_kernel(image, radius=1, sigma_xy=1.0, sigma_rgb=1.0)
    e5, e1 = math.exp(-0.5), math.exp(-1.0)
    # window index 3 = offset (0, -1) (left neighbour), 5 = (0, +1) (right neighbour)
    assert kernel[0, 5, 0].tolist() == pytest.approx([e5, e1, 0.0])
    assert kernel[0, 3, 0].tolist() == pytest.approx([0.0, e5, e1])
    assert kernel[0, 4].abs().sum() == 0  # centre
    assert kernel.sum().item() == pytest.approx(2 * e5 + 2 * e1)
    loss = potts_affinity_loss(probs, kernel, dest, radius=1)
    assert loss.item() == pytest.approx((0.5 * e5 + e1) / 4, rel=1e-6)
    ref = potts_affinity_loss(probs, kernel, dest, radius=1, reference_compat_kernel_sum=True)
    assert ref.item() == pytest.approx((1.5 * e5 + e1) / 4, rel=1e-6)
    # same gradient, only the value differs (trap 7)
    p1 = probs.clone().requires_grad_(True)
    p2 = probs.clone().requires_grad_(True)
    potts_affinity_loss(p1, kernel, dest, 1).backward()
    potts_affinity_loss(p2, kernel, dest, 1, reference_compat_kernel_sum=True).backward()
    assert torch.allclose(p1.grad, p2.grad)
    # empty destination set -> 0, not a division by zero
    assert potts_affinity_loss(probs, kernel, torch.zeros_like(dest), 1).item() == 0


def test_fast_potts_loss_hand_values():
    # the toy of the explicit-kernel test, through the path the losses use (no kernel tensor)
    image, probs, dest = _toy_kernel_inputs()
    e5, e1 = math.exp(-0.5), math.exp(-1.0)
    kw = dict(radius=1, sigma_xy=1.0, sigma_rgb=1.0)
    loss = local_potts_loss(probs, image, dest, **kw)
    assert loss.item() == pytest.approx((0.5 * e5 + e1) / 4, rel=1e-6)
    ref = local_potts_loss(probs, image, dest, reference_compat_kernel_sum=True, **kw)
    assert ref.item() == pytest.approx((1.5 * e5 + e1) / 4, rel=1e-6)
    assert local_potts_loss(probs, image, torch.zeros_like(dest), **kw).item() == 0


@pytest.mark.parametrize('batch,classes,height,width,radius,dilation,channels,weight,compat', [
    (2, 3, 9, 11, 2, 1, 3, 1.0, False),
    (2, 2, 13, 10, 1, 2, 1, 0.5, True),
    (3, 4, 20, 17, 3, 2, 3, 1.0, False),
    (1, 2, 7, 7, 5, 1, 3, 1.0, True),  # window larger than the image
])
def test_fast_potts_loss_matches_explicit_kernel(batch, classes, height, width, radius, dilation,
                                                 channels, weight, compat):
    torch.manual_seed(radius * 10 + classes)
    image = torch.rand(batch, channels, height, width)
    valid = torch.rand(batch, height, width) > 0.2
    dest = torch.rand(batch, height, width) > 0.3
    logits = torch.randn(batch, classes, height, width, requires_grad=True)
    kw = dict(radius=radius, sigma_xy=2.0, sigma_rgb=0.3, weight=weight, dilation=dilation)
    kernel = local_affinity_kernel(image, valid=valid, **kw)
    explicit = potts_affinity_loss(logits.softmax(1), kernel, dest, radius, dilation, compat)
    fast = local_potts_loss(logits.softmax(1), image, dest, valid=valid,
                            reference_compat_kernel_sum=compat, **kw)
    assert fast.item() == pytest.approx(explicit.item(), rel=1e-5)
    g_explicit, = torch.autograd.grad(explicit, logits)
    g_fast, = torch.autograd.grad(fast, logits)
    assert torch.allclose(g_fast, g_explicit, rtol=1e-4, atol=1e-9)
    # gradient w.r.t. the probabilities themselves (not only through a softmax): that of the
    # full-window energy sum_{i in U} sum_j K_ij (1 - <P_i, P_j>) / (C |U|)
    from protocal.prototypes import unfold_windows
    probs = logits.detach().softmax(1).requires_grad_(True)
    window = (unfold_windows(probs, radius, dilation) * kernel.unsqueeze(1)).sum(2)
    full = ((kernel.sum(1) - (window * probs).sum(1)) * dest).sum() / (classes * dest.sum())
    g1, = torch.autograd.grad(full, probs)
    g2, = torch.autograd.grad(local_potts_loss(probs, image, dest, valid=valid, **kw), probs)
    assert torch.allclose(g2, g1, rtol=1e-4, atol=1e-9)


def test_unknown_kernel_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match='sigma_rbg'):
        ProCNSLoss(num_classes=2, kernel=dict(sigma_rbg=0.2))
    with pytest.raises(ValueError, match='radus'):
        GatedCRFLoss(kernel=dict(radus=3))
    assert ProCNSLoss(num_classes=2, kernel=dict(radius=2)).kernel['radius'] == 2


def test_kernel_respects_validity_mask():
    image = torch.zeros(1, 3, 1, 3)
    valid = torch.tensor([[[True, True, False]]])
    kernel = local_affinity_kernel(image, radius=1, sigma_xy=1.0, valid=valid)
    assert kernel[0, :, 0, 2].abs().sum() == 0  # invalid destination
    assert kernel[0, 5, 0, 1] == 0  # invalid source


def test_soft_targets_and_masked_dice():
    z = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1)
    q = soft_pseudo_targets(z)
    assert q[0, :, 0, 0].tolist() == pytest.approx(torch.softmax(torch.tensor([2.0, 0.0]), 0)
                                                   .tolist())
    negative = torch.tensor([-1.0, -3.0]).view(1, 2, 1, 1)
    ref = soft_pseudo_targets(negative, 'reference')[0, :, 0, 0]
    fixed = soft_pseudo_targets(negative)[0, :, 0, 0]
    assert ref[0] < ref[1]  # the reference trap: arg-max class gets less mass
    assert fixed[0] > fixed[1] and fixed.sum().item() == pytest.approx(1.0)
    probs = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1)
    target = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    assert masked_soft_dice_loss(probs, target, mask, eps=0).item() == pytest.approx(0.2)
    assert masked_soft_dice_loss(probs, target, ~mask).item() == 0


def test_anpm_mask_hand_values():
    fg = torch.tensor([[0.9, 0.8], [0.3, 0.9]])
    probs = torch.stack([1 - fg, fg])[None]
    pseudo = torch.tensor([[[0, 1], [1, 255]]])
    released = torch.tensor([True, True])
    noisy, skipped = anpm_noise_mask(probs, pseudo, released, conf_thr=0.5)
    assert noisy[0].tolist() == [[True, False], [True, False]] and not skipped[0]
    # foreground not released -> the image is skipped (no released foreground class in Y^)
    noisy, skipped = anpm_noise_mask(probs, pseudo, torch.tensor([True, False]), 0.5)
    assert skipped[0] and not noisy.any()
    # all-background pseudo-label -> skipped
    noisy, skipped = anpm_noise_mask(probs, torch.zeros(1, 2, 2, dtype=torch.long), released, 0.5)
    assert skipped[0] and not noisy.any()
    # confidence threshold
    noisy, _ = anpm_noise_mask(probs, pseudo, released, conf_thr=0.75)
    assert noisy[0].tolist() == [[True, False], [False, False]]


def test_anpm_class_constraint_and_guard():
    # 3 classes; prediction of class 2 where Y^ has no class 2 -> discarded by the constraint
    probs = torch.zeros(1, 3, 1, 3)
    probs[0, 2, 0, 0] = 1.0
    probs[0, 0, 0, 1] = 1.0
    probs[0, 1, 0, 2] = 1.0
    pseudo = torch.tensor([[[1, 1, 0]]])
    released = torch.ones(3, dtype=torch.bool)
    noisy, skipped = anpm_noise_mask(probs, pseudo, released, 0.5, class_constraint=True,
                                     guard_max_bg=1.0)
    assert noisy[0, 0].tolist() == [False, True, True]
    noisy, _ = anpm_noise_mask(probs, pseudo, released, 0.5, class_constraint=False,
                               guard_max_bg=1.0)
    assert noisy[0, 0].tolist() == [True, True, True]
    # guard: relabelling would leave < 50 % of the foreground and > 95 % background -> skip
    probs = torch.zeros(1, 2, 1, 4)
    probs[0, 0] = 1.0
    pseudo = torch.tensor([[[0, 0, 1, 1]]])
    noisy, skipped = anpm_noise_mask(probs, pseudo, torch.ones(2, dtype=torch.bool), 0.5,
                                     guard_max_bg=0.95)
    assert skipped[0] and not noisy.any()


def test_dice_counts_ignore_noisy_pixels():
    pred = torch.tensor([[0, 1, 1, 1]])
    target = torch.tensor([[0, 1, 0, 255]])
    counts = segmentation_dice_counts(pred, target, 2)
    assert counts.tolist() == [[1.0, 1.0, 2.0], [1.0, 2.0, 1.0]]


def test_saturation_epoch_saturating_vs_linear():
    ipe = 10
    x = np.arange(200)
    saturating = 0.9 * (1 - np.exp(-x / 15.0))
    linear = x / 400.0
    e_sat = saturation_epoch(saturating, ipe)
    e_lin = saturation_epoch(linear, ipe)
    assert e_sat is not None and e_lin is not None
    assert e_sat < e_lin
    assert e_lin >= 19  # a linear curve never saturates within the 20 epochs seen
    assert saturation_epoch([0.1, 0.2], ipe) is None


def test_lwlr_reproduces_a_line():
    x = np.linspace(0, 5, 30)
    y = 2 * x + 1
    assert np.allclose(lwlr_smooth(x, y, 0.7), y)


def test_procns_loss_stages_finite_with_empty_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, requires_grad=True)
    image = torch.rand(2, 3, 16, 16)
    enc = torch.randn(2, 8, 2, 2)
    dec = torch.randn(2, 4, 8, 8)
    sparse = torch.full((2, 16, 16), 255)
    sparse[0, 2:4, 2:4] = 1  # only image 0, only class 1 labelled: class 0 has no prototype
    loss = ProCNSLoss(num_classes=2, kernel=dict(radius=2))
    out1 = loss(logits, sparse, image, feats=[enc, dec], stage=1)
    assert set(out1) == {'loss_pce', 'loss_prsa'}
    pseudo = torch.randint(0, 2, (2, 16, 16))
    pseudo[:, :4] = 255
    out2 = loss(logits, sparse, image, feats=[enc, dec], pseudo=pseudo, stage=2)
    assert set(out2) == {'loss_pce', 'loss_prsa', 'loss_soft', 'loss_pl'}
    total = sum(out2.values())
    total.backward()
    assert all(torch.isfinite(v) for v in out2.values())
    assert torch.isfinite(logits.grad).all()
    # no labelled pixel at all
    out = loss(logits, torch.full((2, 16, 16), 255), image, feats=[enc, dec], stage=1)
    assert out['loss_pce'].item() == 0 and torch.isfinite(out['loss_prsa'])
    with pytest.raises(ValueError, match='pseudo'):
        loss(logits, sparse, image, feats=[enc, dec], stage=2)


def test_baseline_losses_values():
    logits = torch.zeros(1, 2, 4, 4)
    sparse = torch.full((1, 4, 4), 255)
    sparse[0, 0, 0] = 0
    ent = EntropyMinimizationLoss(loss_weight=1.0)(logits)['loss_entropy']
    assert ent.item() == pytest.approx(1.0)  # uniform prediction: normalised entropy 1
    assert TotalVariationLoss(loss_weight=1.0)(logits)['loss_tv'].item() == 0
    step = torch.zeros(1, 2, 4, 4)
    step[0, 1, :, 2:] = 10.0
    assert TotalVariationLoss(loss_weight=1.0)(step)['loss_tv'].item() > 0
    pce = PartialCELoss()(logits, sparse)['loss_pce']
    assert pce.item() == pytest.approx(math.log(2))
    image = torch.zeros(1, 3, 4, 4)
    crf = GatedCRFLoss(kernel=dict(radius=1))(logits, sparse, image)['loss_gated_crf']
    kernel = local_affinity_kernel(image, radius=1, sigma_xy=6.0)
    # uniform prediction: <P_i, P_j> = 1/2 everywhere -> 0.1 * sum K / 2 / (C * #pixels)
    assert crf.item() == pytest.approx(0.1 * kernel.sum().item() / 2 / (2 * 16), rel=1e-6)
    ema = torch.zeros(1, 2, 4, 4)
    ema[0, 1] = 0.9
    pl = EMAPseudoLabelLoss(loss_weight=1.0)(logits, sparse, ema=ema, stage=2)['loss_ema_pl']
    assert pl.item() == pytest.approx(math.log(2))
    assert EMAPseudoLabelLoss()(logits, sparse, ema=ema, stage=1)['loss_ema_pl'].item() == 0


def test_agreement_shortcut_matches_full_window_sum_and_gradient():
    from protocal.prototypes import local_prediction_agreement, unfold_windows
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 9, 11, requires_grad=True)
    kernel = local_affinity_kernel(torch.rand(2, 3, 9, 11), radius=2, sigma_xy=2.0)
    probs = logits.softmax(1)
    full = (unfold_windows(probs, 2) * kernel.unsqueeze(1)).sum(2).mul(probs).sum(1)
    fast = local_prediction_agreement(probs, kernel, 2)
    assert torch.allclose(full, fast, atol=1e-6)
    g_full, = torch.autograd.grad(full.sum(), logits)
    g_fast, = torch.autograd.grad(local_prediction_agreement(logits.softmax(1), kernel, 2).sum(),
                                  logits)
    assert torch.allclose(g_full, g_fast, atol=1e-5)


@pytest.mark.parametrize('shapes,size', [
    ([(3, 5, 4, 6), (3, 2, 9, 11)], (17, 23)),  # two levels, odd scale factors
    ([(2, 8, 1, 1), (2, 4, 3, 1)], (6, 5)),  # degenerate 1-pixel axes
    ([(2, 8, 7, 7)], (7, 7)),  # no up-sampling
])
def test_upsampled_affinity_matches_explicit_embedding(shapes, size):
    from protocal.prototypes import upsampled_prototype_class_affinity
    torch.manual_seed(len(shapes) + size[0])
    feats = [torch.randn(*shape) for shape in shapes]
    protos = torch.randn(shapes[0][0], 3, sum(shape[1] for shape in shapes))
    protos[:, 1] = 0  # an absent class: zero prototype, cosine 0
    embed = torch.cat([torch.nn.functional.interpolate(f, size=size, mode='bilinear',
                                                       align_corners=False) for f in feats], 1)
    explicit = prototype_class_affinity(embed, protos)
    fast = upsampled_prototype_class_affinity(feats, protos, size)
    assert torch.allclose(fast, explicit, atol=1e-5)


def test_affinity_at_feature_resolution_is_close_to_logit_resolution():
    torch.manual_seed(2)
    logits = torch.randn(2, 2, 32, 32)
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 4, 16, 16)]
    labels = torch.randint(0, 2, (2, 32, 32))
    _, a_full = prototype_refined_logits(logits, feats, labels, 2)
    _, a_feat = prototype_refined_logits(logits, feats, labels, 2, affinity_resolution='feature')
    assert a_feat.shape == a_full.shape
    assert (a_feat - a_full).abs().mean() < 0.15  # random (non-smooth) features: worst case
