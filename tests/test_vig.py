"""IsotropicViG backbone and the SEL/PCL ViG decoder: shapes, graph construction checked by hand,
the published block schedule and parameter counts, initialisation and gradient flow.

Everything runs on tiny configurations except the parameter count, which builds the full ViG-S
without running it.
"""
import math

import pytest
import torch
from mmdet.registry import MODELS
from torch import nn

import protocal  # noqa: F401  (registers IsotropicViG)
from protocal.models.backbones import IsotropicViG
from protocal.models.backbones.vig import (MRConv2d, dense_dilated_knn, interleave_channels,
                                           max_relative_features)
from protocal.models.heads.vig_decoder import ViGPointDecoder

TINY = dict(embed_dims=32, num_blocks=4, k=4)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_vig(**kwargs) -> IsotropicViG:
    torch.manual_seed(0)
    model = IsotropicViG(**{**TINY, **kwargs})
    model.init_weights()
    return model


# ------------------------------------------------------------------------------------ backbone
def test_backbone_output_shapes_and_out_indices():
    x = torch.rand(2, 3, 128, 96)
    outs = tiny_vig()(x)
    assert len(outs) == 4
    assert all(o.shape == (2, 32, 4, 3) for o in outs)
    outs = tiny_vig(out_indices=(1, -1))(x)
    assert len(outs) == 2 and all(o.shape == (2, 32, 4, 3) for o in outs)


def test_backbone_builds_from_registry_with_vig_s_defaults():
    model = MODELS.build(dict(type='IsotropicViG', num_blocks=2))
    assert isinstance(model, IsotropicViG)
    assert model.embed_dims == 280 and model.pos_embed.shape == (1, 280, 32, 32)
    widths = [stage.conv.out_channels for stage in model.stem]
    assert widths == [35, 70, 140, 280, 280]
    assert all(stage.conv.stride == (2, 2) and stage.conv.kernel_size == (3, 3)
               for stage in model.stem)


def test_vig_s_knn_and_dilation_schedule_matches_the_spec():
    model = IsotropicViG()
    assert model.knn_sizes == [9, 9, 10, 10, 11, 12, 12, 13, 13, 14, 15, 15, 16, 16, 17, 18]
    assert model.dilations == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    # the schedule is int(linspace(k, 2k, n)), computed exactly
    assert model.knn_sizes == [int(v) for v in torch.linspace(9, 18, 16, dtype=torch.float64)]
    assert [(b.grapher.k, b.grapher.dilation) for b in model.blocks] == list(
        zip(model.knn_sizes, model.dilations))
    assert IsotropicViG(num_blocks=8, use_dilation=False).dilations == [1] * 8
    assert IsotropicViG(num_blocks=8, max_dilation=1).dilations == [1] * 8


def test_input_must_be_a_multiple_of_32():
    model = tiny_vig(num_blocks=1)
    with pytest.raises(ValueError, match='multiples of 32'):
        model(torch.rand(1, 3, 100, 128))


def test_too_few_nodes_for_the_dilated_graph_is_a_clear_error():
    model = tiny_vig(num_blocks=1, k=5)  # 64x64 input: 2x2 = 4 nodes < k = 5
    with pytest.raises(ValueError, match='needs at least 5 nodes'):
        model(torch.rand(1, 3, 64, 64))


def test_pos_embed_is_interpolated_for_another_grid():
    model = tiny_vig(k=2, pos_embed_size=(32, 32))  # k: 2, 2, 3, 4 <= 4 nodes
    model.eval()
    with torch.no_grad():
        model.pos_embed.normal_()
    pos = model.interpolate_pos_embed((2, 2))
    expected = nn.functional.interpolate(model.pos_embed, size=(2, 2), mode='bilinear',
                                         align_corners=False)
    assert pos.shape == (1, 32, 2, 2)
    torch.testing.assert_close(pos, expected)
    assert model.interpolate_pos_embed((32, 32)) is model.pos_embed
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)[-1]
        model.pos_embed.zero_()
        out_zero = model(x)[-1]
    assert out.shape == (1, 32, 2, 2)
    assert not torch.allclose(out, out_zero)  # the embedding is used


def test_pos_embed_of_another_size_is_resized_when_loading(tmp_path):
    src = tiny_vig(num_blocks=1, pos_embed_size=(4, 4))
    with torch.no_grad():
        src.pos_embed.normal_()
    ckpt = tmp_path / 'vig.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, ckpt)
    dst = IsotropicViG(**{**TINY, 'num_blocks': 1}, pos_embed_size=(2, 2),
                       init_cfg=dict(type='Pretrained', checkpoint=str(ckpt), prefix='backbone.'))
    dst.init_weights()
    expected = nn.functional.interpolate(src.pos_embed, size=(2, 2), mode='bilinear',
                                         align_corners=False)
    torch.testing.assert_close(dst.pos_embed.data, expected)
    torch.testing.assert_close(dst.blocks[0].ffn.fc1.conv.weight, src.blocks[0].ffn.fc1.conv.weight)


# ----------------------------------------------------------------------- graph conv, by hand
# 2x2 node grid, 2 channels, row-major nodes:
#   node 0 = (4, 0) at 0 deg, node 1 = (3, 1) at 18.4 deg, node 2 = (0, 2) at 90 deg,
#   node 3 = (1, 5) at 78.7 deg. Angles between them: 0-1 18.4, 0-3 78.7, 0-2 90,
#   1-3 60.3, 1-2 71.6, 2-3 11.3 (the kNN uses cosine, i.e. L2-normalised features).
GRID = torch.tensor([[[4., 3.], [0., 1.]], [[0., 1.], [2., 5.]]]).unsqueeze(0)  # (1, 2, 2, 2)


def test_dense_knn_includes_self_and_applies_dilation():
    nodes = GRID.flatten(2)
    assert dense_dilated_knn(nodes, k=2).tolist() == [[[0, 1], [1, 0], [2, 3], [3, 2]]]
    # dilation 2: the 4 nearest, keep the 1st and 3rd
    # node 0: 0, 1, 3, 2 -> 0, 3; node 1: 1, 0, 3, 2 -> 1, 3;
    # node 2: 2, 3, 1, 0 -> 2, 1; node 3: 3, 2, 1, 0 -> 3, 1
    assert dense_dilated_knn(nodes, k=2, dilation=2).tolist() == [[[0, 3], [1, 3], [2, 1],
                                                                    [3, 1]]]
    # batched: the second image must not see the first one's nodes
    batch = torch.cat([nodes, nodes.flip(-1)])
    idx = dense_dilated_knn(batch, k=2)
    assert idx[1].tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]


def test_max_relative_aggregation_by_hand():
    nodes = GRID.flatten(2)
    rel = max_relative_features(nodes, dense_dilated_knn(nodes, k=2))
    # x_j(i) = max over {i, nn(i)} of (x_n - x_i):
    # node 0: max((0,0), (3-4, 1-0)) = (0, 1);  node 1: max((0,0), (4-3, 0-1)) = (1, 0)
    # node 2: max((0,0), (1-0, 5-2)) = (1, 3);  node 3: max((0,0), (0-1, 2-5)) = (0, 0)
    expected = torch.tensor([[[0., 1., 1., 0.], [1., 0., 3., 0.]]])
    torch.testing.assert_close(rel, expected)


def test_interleaving_order():
    a = torch.tensor([[1., 2., 3.]]).view(1, 3, 1, 1)
    b = torch.tensor([[10., 20., 30.]]).view(1, 3, 1, 1)
    assert interleave_channels(a, b).flatten().tolist() == [1., 10., 2., 20., 3., 30.]
    with pytest.raises(ValueError):
        interleave_channels(a, b[:, :2])


def test_mrconv_feeds_the_interleaved_layout_to_its_grouped_conv():
    conv = MRConv2d(2, 4, groups=4, act_cfg=dict(type='ReLU'))
    assert conv.nn.conv.groups == 4
    conv.eval()
    with torch.no_grad():
        conv.nn.conv.weight.fill_(1.)  # 4 groups of 1 input channel each: out_g = in_g
        conv.nn.conv.bias.zero_()
    nodes = GRID.flatten(2)
    out = conv(GRID, dense_dilated_knn(nodes, k=2)).flatten(2)
    # [x_0, xj_0, x_1, xj_1]; eval BN with default stats is ~identity
    expected = torch.stack([nodes[0, 0], torch.tensor([0., 1., 1., 0.]), nodes[0, 1],
                            torch.tensor([1., 0., 3., 0.])])[None]
    torch.testing.assert_close(out, expected / math.sqrt(1 + 1e-5))


# --------------------------------------------------------------------------------- decoder
@pytest.mark.parametrize('hw', [(4, 4), (2, 3), (1, 1), (8, 8)])
@pytest.mark.parametrize('taps', [False, True])
def test_decoder_shapes(hw, taps):
    h, w = hw
    torch.manual_seed(0)
    decoder = ViGPointDecoder(in_channels=16, num_blocks=3, num_classes=2, embed_dims=8,
                              use_decoder_taps=taps)
    feats = [torch.rand(2, 16, h, w) for _ in range(3)]
    logits, embed = decoder(feats)
    assert logits.shape == (2, 3, 32 * h, 32 * w)
    assert embed.shape == (2, 8, h, w)
    assert (embed >= -0.17).all()  # post-GELU (GELU >= -0.17)
    if taps:
        _, stage_feats = decoder.decode(feats[-1])
        assert [tuple(f.shape[-2:]) for f in stage_feats] == [(2 ** i * h, 2 ** i * w)
                                                               for i in range(1, 5)]
        assert all(t.shape == (2, 16, h, w) for t in decoder.side_taps(stage_feats))
        assert decoder.feat_branch[0].conv.in_channels == 7 * 16
    else:
        assert decoder.taps is None
        assert decoder.feat_branch[0].conv.in_channels == 3 * 16


def test_decoder_options():
    dec = ViGPointDecoder(16, 2, 1, 8, bn_before_softmax=False, decoder_act='gelu')
    assert [name for name, _ in dec.decoder[-1].named_children()] == ['upsample', 'conv']
    assert isinstance(dec.decoder[0].act, nn.GELU)
    dec = ViGPointDecoder(16, 2, 1, 8)
    assert [name for name, _ in dec.decoder[-1].named_children()] == ['upsample', 'conv', 'norm']
    assert isinstance(dec.decoder[0].act, nn.ReLU)
    assert [m.out_channels for m in dec.feat_branch.modules() if isinstance(m, nn.Conv2d)] == [
        8, 4, 16, 8
    ]
    with pytest.raises(ValueError, match='expects 2 block outputs'):
        dec([torch.rand(1, 16, 2, 2)])
    with pytest.raises(ValueError):
        ViGPointDecoder(16, 2, 1, 8, decoder_act='tanh')


def test_spec_initialisation_covers_the_feature_branch():
    dec = ViGPointDecoder(16, 4, 2, 8, use_decoder_taps=True)
    convs = [m for m in dec.modules() if type(m) is nn.Conv2d]
    assert convs and all(not m.bias.detach().any() for m in convs)
    first = dec.feat_branch[0].conv  # fan_in 112: Kaiming std sqrt(2/112) = 0.134
    assert abs(float(first.weight.detach().std()) - math.sqrt(2 / 112)) < 0.02
    vig = tiny_vig()
    assert all(not m.bias.detach().any() for m in vig.modules() if type(m) is nn.Conv2d)
    assert not vig.pos_embed.detach().any()


# --------------------------------------------------------------------- counts and training
def unused_reference_heads(channels: int, num_classes: int, with_classification_head: bool):
    """The heads the reference builds but never uses (spec 2.2 / 2.3, T19)."""
    heads = [nn.Sequential(nn.Conv2d(channels, 1024, 1), nn.BatchNorm2d(1024),
                           nn.Conv2d(1024, num_classes + 1, 1))]
    if with_classification_head:  # SEL: a copy of the last three decoder stages
        widths = [channels // 2, channels // 4, channels // 8, num_classes + 1]
        heads += [
            nn.Sequential(nn.ConvTranspose2d(a, b, 2, 2), nn.Conv2d(b, b, 3, padding=1),
                          nn.BatchNorm2d(b)) for a, b in zip(widths[:-1], widths[1:])
        ]
    return sum(num_params(h) for h in heads)


def test_vig_s_parameter_counts_match_the_spec():
    backbone = IsotropicViG()
    sel = ViGPointDecoder(num_classes=1, use_decoder_taps=False)
    pcl = ViGPointDecoder(num_classes=2, use_decoder_taps=True)
    n_backbone = num_params(backbone)
    n_sel, n_pcl = n_backbone + num_params(sel), n_backbone + num_params(pcl)
    extra_sel = unused_reference_heads(280, 1, with_classification_head=True)
    extra_pcl = unused_reference_heads(280, 2, with_classification_head=False)
    print(f'\nViG-S backbone {n_backbone:,}; SEL {n_sel:,} (+{extra_sel:,} unused in the '
          f'reference = {n_sel + extra_sel:,}); PCL {n_pcl:,} (+{extra_pcl:,} = '
          f'{n_pcl + extra_pcl:,})')
    assert n_backbone == 16_632_490  # hand count: stem 1,172,010 + pos 286,720 + 16 x 948,360
    assert abs(n_sel + extra_sel - 24.3e6) / 24.3e6 < 0.01
    assert abs(n_pcl + extra_pcl - 30.7e6) / 30.7e6 < 0.01


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    backbone = tiny_vig(drop_path_rate=0.1)
    decoder = ViGPointDecoder(32, 4, num_classes=2, embed_dims=8, use_decoder_taps=True)
    backbone.train(), decoder.train()
    logits, embed = decoder(backbone(torch.randn(2, 3, 128, 128)))
    target = torch.randint(0, 3, (2, 128, 128))
    loss = nn.functional.cross_entropy(logits, target) + embed.pow(2).mean()
    loss.backward()
    for name, param in [*backbone.named_parameters(), *decoder.named_parameters()]:
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


def test_with_cp_matches_plain_forward_and_backward():
    model = tiny_vig()
    x = torch.randn(2, 3, 128, 128)
    model.eval()  # deterministic BN so both passes agree
    ref = model(x)[-1]
    ref.sum().backward()
    grad = model.pos_embed.grad.clone()
    model.zero_grad()
    model.with_cp = True
    out = model(x.requires_grad_())[-1]
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(model.pos_embed.grad, grad)


def test_frozen_stages_and_norm_eval():
    model = tiny_vig(frozen_stages=1, norm_eval=True)
    model.train()
    assert not model.pos_embed.requires_grad
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.blocks[1].ffn.fc1.conv.training
