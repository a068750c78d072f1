"""The grammar's newer fields (issue 13): highway skips, channel-split branches with identity
branches, LayerNorm on maps and head vectors, GELU, layer scale, conv bias, ceil-mode pools
and patchify kernels. Each builds, prices exactly (params by numel, FLOPs by fvcore) and
validates; bad values are generated with hypothesis as well as listed in test_schema."""
from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis

import space
from space import GenotypeError
from space.blocks import HIGHWAY_GATE_BIAS
from space.ops import LayerNorm2d


def conv(out, kernel=3, stride=1, **kw):
    return dict(op="conv", out=out, kernel=kernel, stride=stride, **kw)


def highway_net(shortcut: str = "conv-norm") -> dict:
    """A shape-keeping highway block, then a shape-changing one (16 -> 32 channels, stride 2)."""
    return dict(resolution=32, classes=10, stem=[conv(16)], stages=[dict(blocks=[
        dict(repeat=2, skip="highway", act=True, branches=[[conv(16), conv(16, order="cn")]]),
        dict(skip="highway", shortcut=shortcut, branches=[[conv(32, 3, 2), conv(32, order="cn")]])])])


def fvcore_flops(model: torch.nn.Module, resolution: int) -> int:
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad():
        return (FlopCountAnalysis(model.eval(), torch.zeros(1, 3, resolution, resolution))
                .unsupported_ops_warnings(False).uncalled_modules_warnings(False).total())


def assert_exact(doc: dict, resolution: int = 32) -> torch.nn.Module:
    g = space.load(doc)
    torch.manual_seed(0)
    model = space.build(g, resolution=resolution).eval()
    c = space.complexity(g, resolution)
    assert c.params == sum(p.numel() for p in model.parameters())
    assert c.flops == fvcore_flops(model, resolution)
    graph = space.to_graph(g, resolution)  # raises if its node costs drift from complexity
    assert graph.graph["flops"] == c.flops
    return model


# --------------------------------------------------------------------------- highway

@pytest.mark.parametrize("shortcut", ["conv-norm", "conv", "pad"])
def test_highway_shape_and_cost_equal_fvcore(shortcut):
    model = assert_exact(highway_net(shortcut))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    blocks = [b for stage in model.stages for b in stage]
    assert [b.skip for b in blocks] == ["highway"] * 3
    assert isinstance(blocks[0].shortcut, torch.nn.Identity)  # projections only where the shape changes
    assert not isinstance(blocks[2].shortcut, torch.nn.Identity)


def test_highway_gate_starts_negative_so_the_block_starts_near_identity():
    model = space.build(space.load(highway_net())).eval()
    block = model.stages[0][0]
    assert torch.all(block.gate.bias == HIGHWAY_GATE_BIAS) and HIGHWAY_GATE_BIAS < 0
    x = torch.randn(8, 16, 32, 32)
    with torch.no_grad():
        t = torch.sigmoid(block.gate(x))
        h = block.branches[0](x)  # H(x): the block's one branch (it has no post ops)
        expected = block.act(t * h + (1 - t) * x)
        assert torch.allclose(block(x), expected, atol=1e-6)  # T * H(x) + (1 - T) * x, then the ReLU
    # the gate carries mostly the input at initialisation: T is near sigmoid(bias), well below a half
    assert abs(t.mean().item() - 1 / (1 + math.exp(-HIGHWAY_GATE_BIAS))) < 0.05
    assert t.mean() < 0.25


def test_highway_contains_the_ungated_residual_add_in_params():
    """A highway block costs its residual twin plus exactly one 1x1 gate conv with a bias."""
    highway = space.complexity(highway_net())
    residual = space.complexity(highway_net() | {"stages": [dict(blocks=[
        dict(b, skip="residual") for b in highway_net()["stages"][0]["blocks"]])]})
    gate_params = 2 * (16 * 16 + 16) + (16 * 32 + 32)
    gate_flops = 2 * 16 * 16 * 32 * 32 + 16 * 32 * 16 * 16
    assert highway.params - residual.params == gate_params
    assert highway.flops - residual.flops == gate_flops


# --------------------------------------------------------------------------- split, identity, depthwise

def mixer_net() -> dict:
    """InceptionNeXt's token mixer, made small: identity | 3x3 dw | 1x5 dw | 5x1 dw on 24 channels."""
    dw = lambda k: dict(op="conv", out=1.0, kernel=k, groups="depthwise", order="c")  # noqa: E731
    mixer = dict(op="branches", split=[0.5, 0.25, 0.125, 0.125],
                 branches=[[dict(op="identity")], [dw(3)], [dw([1, 5])], [dw([5, 1])]])
    return dict(resolution=32, classes=10, act="gelu", stem=[conv(24, 4, 4, padding=0, order="cn", bias=True)],
                stages=[dict(blocks=[
                    dict(repeat=2, skip="residual", layer_scale=0.5,
                         branches=[[mixer, dict(op="norm"), conv(2.0, 1, order="ca"), conv(24, 1, order="c")]]),
                    dict(branches=[[conv(48, 2, 2, padding=0, order="nc", bias=True)]])])],
                head=dict(hidden=[64], norm="layer"))


def test_split_mixer_slices_channels_and_costs_equal_fvcore():
    model = assert_exact(mixer_net())
    mixer = model.stages[0][0].branches[0][0]
    assert mixer.split == [12, 6, 3, 3]
    x = torch.randn(1, 24, 8, 8)
    with torch.no_grad():
        y = mixer(x)
        assert torch.equal(y[:, :12], x[:, :12])  # the identity group passes through untouched
        assert torch.allclose(y[:, 12:18], mixer.branches[1](x[:, 12:18]))
        assert torch.allclose(y[:, 21:], mixer.branches[3](x[:, 21:]))


def test_split_counts_equal_fractions():
    by_count = mixer_net()
    by_count["stages"][0]["blocks"][0]["branches"][0][0]["split"] = [12, 6, 3, 3]
    assert space.complexity(by_count).params == space.complexity(mixer_net()).params
    assert space.complexity(by_count).flops == space.complexity(mixer_net()).flops


def test_graph_shows_split_identity_layer_scale_and_gate():
    types = {d["type"] for _, d in space.to_graph(mixer_net()).nodes(data=True)}
    assert {"split", "identity", "scale", "norm"} <= types
    gates = [d for _, d in space.to_graph(highway_net()).nodes(data=True) if d.get("role") == "gate"]
    assert len(gates) == 3 and all(d["params"] > 0 for d in gates)
    labels = {d["label"] for _, d in space.to_graph(mixer_net()).nodes(data=True)}
    assert "split 12/6/3/3" in labels and any(label.endswith(" dw") for label in labels)


# --------------------------------------------------------------------------- norms, activations, bias, pools

def test_layer_norm_is_channels_first_and_fvcore_exact():
    doc = dict(resolution=32, classes=10, norm="layer", norm_eps=1e-6, act="gelu",
               stem=[conv(16), dict(op="pool", kernel=3, stride=2, padding=0, ceil=True)],
               stages=[dict(blocks=[dict(skip="residual", branches=[[conv(16, order="nac"), conv(16, order="nac")]])])],
               head=dict(ops=[dict(op="adaptive_pool"), dict(op="norm")], pool="none"))
    model = assert_exact(doc)
    norm = model.stem[0].norm
    assert isinstance(norm, LayerNorm2d) and norm.eps == 1e-6
    assert isinstance(model.stem[0].act, torch.nn.GELU)
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        y = norm(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 5, 7), atol=1e-5)  # normalised over channels, per position
    assert model.stem[1].pool.ceil_mode and space.complexity(doc).parts[0].size == (16, 16)  # 32 -> ceil(14.5)+1


def test_conv_bias_on_and_off():
    doc = dict(resolution=16, classes=10, stem=[conv(8, bias=True), conv(8, order="c", bias=False)],
               stages=[dict(blocks=[dict(branches=[[conv(8)]])])])
    model = assert_exact(doc, 16)
    assert model.stem[0].conv.bias is not None and model.stem[1].conv.bias is None


# --------------------------------------------------------------------------- generated bad input

@settings(max_examples=60, deadline=None)
@given(kernel=st.integers(1, 8), stride=st.integers(1, 8), padding=st.one_of(st.none(), st.integers(0, 4)))
def test_even_kernels_are_legal_only_as_patchify(kernel, stride, padding):
    doc = dict(resolution=64, stem=[conv(8, kernel, stride, **({} if padding is None else {"padding": padding}))],
               stages=[dict(blocks=[dict(branches=[[dict(op="identity")]])])])
    patchify = stride == kernel and padding == 0
    if kernel % 2 == 0 and not patchify:
        with pytest.raises(GenotypeError) as info:
            space.load(doc)
        assert info.value.path == "stem[0].kernel" and f"{kernel} is even" in str(info.value)
    else:
        assert space.complexity(doc).params == 8 * 3 * kernel * kernel + 2 * 8 + 8 * 1000 + 1000


@settings(max_examples=60, deadline=None)
@given(fractions=st.lists(st.floats(0.01, 0.99), min_size=2, max_size=4))
def test_split_fractions_must_sum_to_one(fractions):
    doc = dict(resolution=8, stem=[conv(64)], stages=[dict(blocks=[dict(
        split=fractions, branches=[[dict(op="identity")] for _ in fractions])])])
    if abs(sum(fractions) - 1) > 1e-6:
        with pytest.raises(GenotypeError) as info:
            space.load(doc)
        assert info.value.path == "stages[0].blocks[0].split" and "not 1" in str(info.value)
    elif any(int(64 * f) < 1 for f in fractions[1:]):  # a slice too thin for 64 channels
        with pytest.raises(GenotypeError, match="no channels"):
            space.complexity(doc)
    else:
        assert space.complexity(doc).parts[1].channels == 64


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=2, max_size=4))
def test_split_counts_must_add_up_to_the_input(counts):
    doc = dict(resolution=8, stem=[conv(64)], stages=[dict(blocks=[dict(
        split=counts, branches=[[dict(op="identity")] for _ in counts])])])
    if sum(counts) != 64:
        with pytest.raises(GenotypeError) as info:
            space.complexity(doc)
        assert info.value.path == "stages[0].blocks[0].split" and f"add up to {sum(counts)}" in str(info.value)
    else:
        assert space.complexity(doc).parts[1].channels == 64
