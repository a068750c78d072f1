"""The timm-style model API on every named genotype: paths and names wherever a genotype is taken,
forward_features / forward_head(pre_logits), reset_classifier, features_only + out_indices, feature_info,
and `names(pattern, family)`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import space
from space.named import named, names


def small_resolution(g) -> int:
    """The smallest of 64 and the genotype's own resolution it fits (the API doesn't depend on the size)."""
    for r in (64, 96, 160):
        try:
            space.complexity(g, r, breakdown=False)
            return r
        except space.GenotypeError:
            pass
    return g.resolution


@pytest.mark.parametrize("name", names())
@torch.no_grad()
def test_timm_api_on_every_named_genotype(name):
    torch.manual_seed(0)
    g = named(name)
    res = min(g.resolution, small_resolution(g))
    net = space.build(name, resolution=res).eval()
    x = torch.randn(1, 3, res, res)
    logits = net(x)
    feats = net.forward_features(x)
    assert feats.shape[1] == net.num_features
    assert torch.equal(net.forward_head(feats), logits)  # forward is forward_head(forward_features(x))
    pre = net.forward_head(feats, pre_logits=True)
    assert torch.allclose(net.get_classifier()(pre), logits, rtol=1e-4, atol=1e-5)

    info = net.feature_info
    assert len(info) == len(g.stages) and info.module_name() == [f"stages.{n}" for n, _ in net.stages.named_children()]
    last = len(info) - 1
    features = space.build(name, resolution=res, features_only=True, out_indices=(0, last)).eval()
    assert features.load_state_dict(net.state_dict(), strict=False).missing_keys == []
    outs = features(x)
    assert [o.shape[1] for o in outs] == [info[0]["num_chs"], info[last]["num_chs"]] == features.feature_info.channels()
    for out, reduction in zip(outs, features.feature_info.reduction()):
        assert 0.5 < res / out.shape[-1] / reduction < 2  # the nominal stride, up to padding
    reductions = info.reduction()
    assert reductions == sorted(reductions) and all(r & (r - 1) == 0 for r in reductions)  # powers of two, rising
    if not g.head.ops:
        assert torch.equal(outs[-1], feats)

    net.reset_classifier(7)
    assert net(x).shape == (1, 7) and net.num_classes == 7
    assert torch.equal(net.forward_head(feats, pre_logits=True), pre)  # only the classifier changed
    net.reset_classifier(0)
    assert net(x).shape == pre.shape
    net.reset_classifier(5)
    assert net(x).shape == (1, 5)


def test_aux_classifiers_are_reset_too():
    net = space.build("googlenet_aux").train()
    net.reset_classifier(3)
    logits, aux = net(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 3) and aux and all(a.shape == (2, 3) for a in aux)


def test_out_indices_default_negative_and_out_of_range():
    net = space.build("resnet50", features_only=True)
    assert len(net(torch.randn(1, 3, 64, 64))) == 4 and net.feature_info.reduction() == [4, 8, 16, 32]
    assert space.build("resnet50", features_only=True, out_indices=(-1,)).feature_info.channels() == [2048]
    with pytest.raises(space.GenotypeError, match="out_indices: 4 is out of range: the network has 4 stages"):
        space.build("resnet50", features_only=True, out_indices=(4,))


def test_paths_and_names_wherever_a_genotype_is_taken(tmp_path, monkeypatch):
    path = tmp_path / "net.yaml"
    path.write_text(space.to_yaml(named("mobilenet")))
    monkeypatch.chdir(tmp_path)
    want = space.digest(named("mobilenet"))
    for ref in ("mobilenet", "net.yaml", str(path), path, Path("net.yaml"), space.dump(named("mobilenet")),
                space.to_yaml(named("mobilenet"))):
        assert space.digest(space.load(ref)) == want
    assert space.complexity("net.yaml").params == space.complexity(named("mobilenet")).params
    assert sum(p.numel() for p in space.build(path).parameters()) == space.complexity("mobilenet").params
    assert space.to_graph("net.yaml").number_of_nodes() == space.to_graph(named("mobilenet")).number_of_nodes()
    with pytest.raises(space.GenotypeError, match="missing.yaml: no such file"):
        space.load("missing.yaml")
    with pytest.raises(space.GenotypeError, match="unknown genotype 'resnet5'; did you mean resnet50"):
        space.build("resnet5")
    (tmp_path / "bad.yaml").write_text("stages: [{blocks: [{branches: [[{op: conv, out: 8, kernel: 4}]]}]}]\n")
    with pytest.raises(space.GenotypeError, match=r"^bad.yaml: stages\[0\].blocks\[0\].branches\[0\]\[0\].kernel: 4 is even"):
        space.load("bad.yaml")


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.integers(), st.floats(), st.lists(st.integers()), st.binary(), st.none(), st.booleans()))
def test_anything_else_is_refused_saying_what_is_accepted(value):
    with pytest.raises(space.GenotypeError, match="a registered name .* or the path of a YAML/JSON file"):
        space.load(value)


def test_names_filter_like_timm_list_models():
    assert names("res*") == [n for n in names() if n.startswith("res")] and "resnet50" in names("res*")
    assert set(names("*inception*")) == {n for n in names() if "inception" in n} and "inception_v3" in names("*inception*")
    assert names("xception") == ["xception"] and names("nothing*") == []
    dense = names(family="dense")
    assert dense and all(named(n).family == "dense" for n in dense) and "densenet121" in dense
    assert names("*121", family="dense") == ["densenet121"]
    assert "dense" in space.families() and "residual" in space.families()


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_genotype_or_one_genotype_error(text):
    """Names, paths and YAML text share the str type: whatever the text, the answer is a Genotype or a
    GenotypeError, never another exception."""
    try:
        assert isinstance(space.load(text), space.Genotype)
    except space.GenotypeError as e:
        assert "\n" not in str(e)


def test_registering_a_taken_name_warns_and_names_both(monkeypatch):
    from space.named import REGISTRY, register
    monkeypatch.setitem(REGISTRY, "resnet50", REGISTRY["resnet50"])  # restored after the test

    def resnet50():
        return {}
    with pytest.warns(UserWarning, match="'resnet50' is registered again: .*resnet50 replaces space.named.resnet.resnet50"):
        register(resnet50)
    assert REGISTRY["resnet50"] is resnet50
