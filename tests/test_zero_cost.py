"""Zero-cost scores (explorer/trial/scores.py) on tiny proxies and the digits data, on CPU."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import space
from explorer.trial import data as datasets
from explorer.trial import scores as Z
from explorer.trial.proxy import make_proxy
from space.named import named

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def plain(width: int = 8, act: str = "relu") -> space.Genotype:
    """A small plain CNN for 8x8 digits: conv stem, two conv-BN-ReLU blocks, a max pool, GAP, one classifier."""
    return space.load({"resolution": 8, "classes": 10, "act": act,
                       "stem": [{"op": "conv", "out": width, "kernel": 3}],
                       "stages": [{"blocks": [{"repeat": 2, "branches": [[{"op": "conv", "out": 2 * width,
                                                                           "kernel": 3}]]},
                                              {"branches": [[{"op": "pool", "kernel": 2, "stride": 2}]]}]}]})


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits", resolution=8, seed=0)


def build(g, data, seed=0):
    torch.manual_seed(seed)
    return space.build(g, data.num_classes, data.in_channels)


def test_synflow_never_looks_at_the_data(digits):
    model = build(plain(), digits)
    x1, y1 = Z.minibatch(digits, 16, seed=1)
    x2, y2 = Z.minibatch(digits, 32, seed=2)
    a = Z.compute(model, x1, y1, ("synflow",))["synflow"]
    assert a == Z.compute(model, x2, y2, ("synflow",))["synflow"]
    assert a == Z.compute(model, torch.zeros_like(x1), y1, ("synflow",))["synflow"]
    assert a > 0 and math.isfinite(a)


def test_synflow_is_conserved_across_layers(digits):
    """Tanaka et al.'s theorem: in a bias-free positively homogeneous net, every layer carries the same
    synaptic flow (BN removed, convs without bias; the classifier's bias is outside the layers' flow)."""
    per_layer = Z.synflow(build(plain(), digits), (1, 8, 8), per_layer=True)
    assert len(per_layer) == 4  # stem conv, two block convs, classifier
    assert all(v == pytest.approx(per_layer[0], rel=1e-9) for v in per_layer)


def test_synflow_leaves_the_model_untouched(digits):
    model = build(plain(), digits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Z.synflow(model, (1, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32 and next(model.parameters()).grad is None


def test_params_score_is_the_parameter_count(digits):
    for g in (plain(), make_proxy(named("resnet110"), 8, 0.25, 1, 1, 10)):
        model = build(g, digits)
        scores = Z.score_proxy(g, digits, ("params",))
        assert scores["params"] == sum(p.numel() for p in model.parameters())
        assert scores["params"] == space.complexity(g, in_channels=1, breakdown=False).params


def test_snip_and_grad_norm_are_positive_and_deterministic(digits):
    g = make_proxy(named("resnet110"), 8, 0.25, 1, 1, 10)
    a = Z.score_proxy(g, digits, ("snip", "grad_norm"), batch_size=32, seed=3)
    assert a["snip"] > 0 and a["grad_norm"] > 0 and all(math.isfinite(v) for v in a.values())
    assert a == Z.score_proxy(g, digits, ("snip", "grad_norm"), batch_size=32, seed=3)


def test_scores_of_a_network_with_dropout_ignore_the_callers_random_state(digits):
    g = make_proxy(named("alexnet"), 8, 0.25, 1, 1, 10)  # dropout in its head, active in training mode
    names = ("snip", "grad_norm", "naswot")
    torch.manual_seed(1)
    a = Z.score_proxy(g, digits, names, batch_size=32, seed=3)
    torch.manual_seed(2)
    assert a == Z.score_proxy(g, digits, names, batch_size=32, seed=3)


def test_naswot_is_finite_and_grows_with_width(digits):
    """More rectified units separate the images' codes further: log|K_H| is higher for a wider net."""
    x, y = Z.minibatch(digits, 32, seed=0)
    narrow = [Z.naswot(build(plain(4), digits, seed), x) for seed in range(3)]
    wide = [Z.naswot(build(plain(32), digits, seed), x) for seed in range(3)]
    assert all(math.isfinite(v) for v in narrow + wide)
    assert sum(wide) / 3 > sum(narrow) / 3


def test_naswot_is_minus_infinity_for_repeated_images(digits):
    """Two identical images get identical codes: two equal rows of K_H, so det K_H = 0."""
    x, _ = Z.minibatch(digits, 8, seed=0)
    x[1] = x[0]
    assert Z.naswot(build(plain(), digits), x) == -math.inf
    assert Z.clean(-math.inf) is None and Z.finite(float("nan")) == -math.inf  # ranked last, null in JSON


def test_every_activation_is_coded(digits):
    x, _ = Z.minibatch(digits, 16, seed=0)
    for act in ("relu6", "silu", "gelu", "hardswish"):
        assert math.isfinite(Z.naswot(build(plain(8, act), digits), x))


def test_unknown_score_is_refused(digits):
    with pytest.raises(ValueError, match="unknown score"):
        Z.compute(build(plain(), digits), *Z.minibatch(digits, 4), ("zen",))


def test_explore_score_json(tmp_path):
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "cli", "score", "resnet110", "--dataset", "digits", "--batch-size",
                          "16", "--json"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert set(doc["scores"]) == set(Z.SCORES) and doc["proxy"]["resolution"] == 16
    assert doc["scores"]["params"] == doc["proxy"]["params"]
    assert all(v is not None and v > 0 for k, v in doc["scores"].items() if k != "naswot")
    bad = subprocess.run([sys.executable, "-m", "cli", "score", "resnet110", "--scores", "zen"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "--scores" in bad.stderr and "Traceback" not in bad.stderr
