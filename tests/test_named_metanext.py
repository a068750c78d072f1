"""InceptionNeXt and ConvNeXt as fixed points of the grammar (timm layouts).

Each one's built parameter count matches timm's exactly and equals the analytic
count, a forward pass gives (1, 1000) logits, and the analytic FLOPs equal
fvcore's count of the built model.
"""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

with warnings.catch_warnings():  # fvcore's import scripts helpers with torch.jit, deprecated in torch 2.x
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis

import space
from space.named import named
from space.ops import LayerNorm2d
from space.schema import dump, load

# name, timm's parameter count (1000 classes)
CASES = [
    ("inception_next_tiny", 28_055_680),
    ("inception_next_small", 49_374_016),
    ("inception_next_base", 86_672_136),
    ("convnext_tiny", 28_589_128),
]
NAMES = [name for name, _ in CASES]


def built(name: str) -> torch.nn.Module:
    """Built on the meta device and materialised uninitialised: numel and fvcore's trace need no init."""
    with torch.device("meta"):
        m = space.build(named(name))
    return m.to_empty(device="cpu").eval()


def test_every_name_is_registered():
    assert set(NAMES) <= set(space.names())


@pytest.mark.parametrize("name, reference", CASES, ids=NAMES)
def test_params_flops_and_forward(name, reference, one_torch_thread):
    g = named(name)
    m = built(name)
    params = sum(p.numel() for p in m.parameters())
    assert params == reference, f"{params:,} != {reference:,}"
    assert space.complexity(g).params == params
    x = torch.zeros(1, 3, 224, 224)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.inference_mode():
        assert m(x).shape == (1, 1000)
        counted = (FlopCountAnalysis(m, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False).total())
    assert space.complexity(g).flops == counted


def test_inception_next_tiny_flops_at_224():
    # fvcore's count of timm's own inception_next_tiny (checked once by hand): 4,194,629,280
    assert space.complexity(named("inception_next_tiny")).flops == 4_194_629_280


def test_inception_mixer_layout():
    """timm's InceptionDWConv2d on 96 channels: identity 60 | 3x3 dw 12 | 1x11 dw 12 | 11x1 dw 12, with biases."""
    m = built("inception_next_tiny")
    mixer = m.stages.stage0.block0_0.branches[0][0]
    assert mixer.split == [60, 12, 12, 12]
    convs = [b[0].conv for b in mixer.branches[1:]]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 11), (11, 1)]
    assert [(c.in_channels, c.out_channels, c.groups) for c in convs] == [(12, 12, 12)] * 3
    assert all(c.bias is not None for c in convs)
    assert not list(mixer.branches[0].parameters())  # the identity group


def test_stems_heads_and_layer_scale():
    inc, cnx = built("inception_next_tiny"), built("convnext_tiny")
    stem = inc.stem[0].conv
    assert (stem.kernel_size, stem.stride, stem.padding, stem.bias is not None) == ((4, 4), (4, 4), (0, 0), True)
    assert isinstance(inc.stem[0].norm, torch.nn.BatchNorm2d) and isinstance(cnx.stem[0].norm, LayerNorm2d)
    down = inc.stages.stage1.block0.branches[0][0]
    assert isinstance(down[0], torch.nn.BatchNorm2d) and down[1].kernel_size == (2, 2) and down[1].stride == (2, 2)
    norms = [x for x in inc.head.classifier if isinstance(x, torch.nn.LayerNorm)]
    assert len(norms) == 1 and norms[0].normalized_shape == (2304,)
    blocks = [b for s in inc.stages for b in s if b.gamma is not None]
    assert len(blocks) == 3 + 3 + 9 + 3
    assert all(torch.equal(b.gamma, torch.full_like(b.gamma, 1e-6)) for b in space.build(named("inception_next_tiny"))
               .stages.stage0)


def test_canonical_form_round_trips():
    for name in NAMES:
        g = named(name)
        assert load(dump(g)) == g and g.family == "metanext"
