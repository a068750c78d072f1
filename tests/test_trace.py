"""space.trace: the one walk of a genotype that complexity, to_graph, build and the proxy read."""
import pytest
import torch

import space
from space.blocks import Block, lesioned
from space.network import residual_blocks


@pytest.mark.parametrize("name", ["resnet50", "googlenet_aux", "densenet121", "inception_v3"])
def test_steps_sum_to_complexity(name):
    t = space.trace(name, 96)
    cx = space.complexity(name, 96)
    assert (t.flops, t.params, t.acts) == (cx.flops, cx.params, cx.acts)
    assert tuple(sum(getattr(s, k) for s in t.steps) for k in ("flops", "params", "acts")) == (t.flops, t.params,
                                                                                               t.acts)
    assert all(src is None or src < k for k, s in enumerate(t.steps) for src, _ in s.sources)  # in walk order


def test_recorded_shapes_are_the_built_network_s():
    t = space.trace("resnet50", 64, 10)
    net = space.build("resnet50", 10, resolution=64).eval()
    seen = {}
    for i, stage in enumerate(net.stages):  # forward runs the blocks one by one, so hook each stage's last
        stage[-1].register_forward_hook(lambda m, inp, out, i=i: seen.update({i: tuple(out.shape[1:])}))
    net(torch.randn(1, 3, 64, 64))
    assert seen == {i: t.shapes[f"stages[{i}]"] for i in range(len(net.stages))}
    assert t.shapes["input"] == (3, 64, 64) and t.shapes["head.ops"] == t.shapes["stages[3]"]


def test_a_partial_trace_stops_where_complexity_raises():
    with pytest.raises(space.GenotypeError) as raised:
        space.complexity("resnet50", 8)
    t = space.trace("resnet50", 8, partial=True)
    assert str(t.error) == str(raised.value)
    assert "stem" in t.shapes and t.steps  # what came before the error is kept


def test_lesioned_swaps_modules_back_and_refuses_plain_blocks():
    model = space.build("resnet110", 10, resolution=32).eval()
    blocks = residual_blocks(model)[:2]
    before = [b.stochastic_branch for b in blocks]
    with pytest.raises(RuntimeError), lesioned(blocks):
        assert [b.survival for b in blocks] == [0.0, 0.0]
        raise RuntimeError("inside")
    assert [b.stochastic_branch for b in blocks] == before  # restored even after an error
    plain = next(m for m in space.build("vgg16", 10, resolution=32).modules() if isinstance(m, Block))
    with pytest.raises(ValueError, match="only residual blocks"), lesioned([plain]):
        pass
