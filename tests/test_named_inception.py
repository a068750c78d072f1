"""The Inception family as fixed points of the grammar: GoogLeNet, BN-Inception, Inception v3 and v4,
Inception-ResNet v1 and v2, with and without auxiliary classifiers.

Each one's built parameter count matches its reference implementation exactly and
equals the analytic count, a forward pass gives (1, 1000) logits, the aux variants
return their aux logits in training, and the analytic FLOPs equal fvcore's count.
"""
from __future__ import annotations

import functools
import logging
import warnings

import pytest
import torch

with warnings.catch_warnings():  # fvcore's import scripts helpers with torch.jit, deprecated in torch 2.x
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis

import space
from space.named import named
from space.schema import dump, load

# name, family, resolution, reference params (None: no published count, self-consistency only)
CASES = [
    ("googlenet", "inception", 224, 6_624_904),  # torchvision googlenet(aux_logits=False)
    ("googlenet_aux", "inception", 224, 13_004_888),  # torchvision googlenet(aux_logits=True)
    ("bn_inception", "inception", 224, 11_295_240),  # Cadene's pretrainedmodels bninception (Caffe port)
    ("inception_v3", "inception", 299, 23_834_568),  # torchvision inception_v3(aux_logits=False)
    ("inception_v3_aux", "inception", 299, 27_161_264),  # torchvision inception_v3(aux_logits=True)
    ("inception_v4", "inception", 299, 42_679_816),  # timm inception_v4
    ("inception_resnet_v2", "inception-resnet", 299, 55_843_464),  # timm inception_resnet_v2
    ("inception_resnet_v1", "inception-resnet", 299, None),  # Szegedy et al. 2016 publish no count
]
NAMES = [case[0] for case in CASES]

# (channels, size) after each stage, as the reference implementations' feature maps are
STAGE_SHAPES = {
    "googlenet": [(480, 28), (832, 14), (1024, 7)],  # inception3b, 4e, 5b
    "bn_inception": [(576, 14), (1056, 7), (1024, 7)],  # inception_3c, 4e, 5b
    "inception_v3": [(288, 35), (768, 17), (2048, 8)],  # Mixed_5d, 6e, 7c
    "inception_v4": [(384, 35), (384, 35), (1024, 17), (1536, 8)],  # Mixed_5a, A, B, C
    "inception_resnet_v2": [(320, 35), (1088, 17), (1536, 8)],  # repeat, repeat_1, conv2d_7b
    "inception_resnet_v1": [(256, 35), (896, 17), (1792, 8)],  # paper, Figure 15 (v1 sizes)
}


@functools.lru_cache(maxsize=None)
def model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return space.build(named(name)).eval()


def params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_every_name_is_registered():
    assert set(NAMES) <= set(space.names())


@pytest.mark.parametrize("name, family, resolution, reference", CASES, ids=NAMES)
def test_params_match_reference(name, family, resolution, reference):
    g = named(name)
    built = params(model(name))
    assert space.complexity(g).params == built
    if reference is not None:
        assert built == reference, f"{built:,} != {reference:,}"


def test_aux_heads_add_exactly_their_reference_params():
    # GoogLeNet's InceptionAux(512) and (528): 1x1 conv 128 + BN, FC 2048 -> 1024, FC 1024 -> 1000
    fc = 2048 * 1024 + 1024 + 1024 * 1000 + 1000
    assert params(model("googlenet_aux")) - params(model("googlenet")) == (
        512 * 128 + 256 + fc) + (528 * 128 + 256 + fc)
    # Inception v3's InceptionAux(768): 1x1 conv 128 + BN, 5x5 conv 768 + BN, FC 768 -> 1000
    assert params(model("inception_v3_aux")) - params(model("inception_v3")) == (
        768 * 128 + 256 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000)


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_flops_match_fvcore(name):
    g = named(name)
    r = g.resolution
    x = torch.zeros(1, 3, r, r)
    with torch.no_grad():
        assert model(name)(x).shape == (1, 1000)  # eval: aux heads stay silent
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        counted = (FlopCountAnalysis(model(name), x)
                   .unsupported_ops_warnings(False).uncalled_modules_warnings(False).total())
    assert space.complexity(g).flops == counted


@pytest.mark.parametrize("name, heads", [("googlenet_aux", 2), ("inception_v3_aux", 1)])
def test_aux_logits_in_training(name, heads):
    r = named(name).resolution
    m = model(name)
    try:
        m.train()
        with torch.no_grad():
            logits, aux = m(torch.zeros(2, 3, r, r))
    finally:
        m.eval()
    assert logits.shape == (2, 1000)
    assert len(aux) == heads and all(a.shape == (2, 1000) for a in aux)


def test_no_aux_means_plain_logits_in_training():
    m = model("googlenet")
    try:
        with torch.no_grad():
            out = m.train()(torch.zeros(2, 3, 224, 224))
    finally:
        m.eval()
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1000)


@pytest.mark.parametrize("name", list(STAGE_SHAPES))
def test_stage_shapes_match_reference(name):
    parts = space.complexity(named(name)).parts
    stages = [(p.channels, p.size[0]) for p in parts if p.name not in ("stem", "head")]
    assert stages == STAGE_SHAPES[name]


@pytest.mark.parametrize("name, family, resolution, reference", CASES, ids=NAMES)
def test_name_family_resolution_and_canonical_form(name, family, resolution, reference):
    g = named(name)
    eps = 1e-5 if name == "bn_inception" else 1e-3  # the Caffe port keeps PyTorch's default
    assert (g.name, g.family, g.resolution, g.norm_eps) == (name, family, resolution, eps)
    assert load(dump(g)) == g


def test_bn_inception_convs_carry_biases_and_pools_round_up():
    m = model("bn_inception")
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    pools = [x for x in m.modules() if isinstance(x, (torch.nn.MaxPool2d, torch.nn.AvgPool2d))]
    # stem 3; 8 modules of 1 + 2 + 3 + 1 convs; 2 reductions (3c, 4e) of 2 + 3
    assert len(convs) == 3 + 8 * 7 + 2 * 5 and all(c.bias is not None for c in convs)
    assert len(pools) == 2 + 8 + 2 and all(p.ceil_mode for p in pools)
    assert sum(isinstance(p, torch.nn.BatchNorm2d) for p in m.modules()) == len(convs)


def test_inception_resnet_v2_residual_layout():
    blocks = [b for stage in named("inception_resnet_v2").stages for b in stage.blocks]
    residual = [(b.repeat, b.scale, b.act) for b in blocks if b.skip == "residual"]
    assert residual == [(10, 0.17, True), (20, 0.10, True), (9, 0.20, True), (1, 1.0, False)]
    for b in blocks:
        if b.skip == "residual":  # linear 1x1 up-projection: conv with bias, no norm or activation
            (up,) = b.post
            assert (up.op, up.order, up.kernel) == ("conv", "c", 1)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.bias is not None
               for m in model("inception_resnet_v2").modules()) == 10 + 20 + 9 + 1
