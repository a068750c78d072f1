"""Beyond plain search: pre-screening, Pareto pruning, proxy fidelity, the lesion study, stochastic depth.

Tiny proxies (8 px digits) of a tiny space written here, on CPU.
"""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

import space
from explorer.analysis import lesion
from explorer.base.settings import Settings
from explorer.commands import runner
from explorer.sweep import objective as search
from explorer.sweep import pruning
from explorer.trial import data as datasets
from explorer.trial.trainer import Result
from space.blocks import Block, lesioned
from space.network import residual_blocks, stochastic_depth
from space.sampling import FixedSource, load_space, sample

ROOT = Path(__file__).resolve().parents[1]
COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED

# Plain or residual, 1-3 blocks, two widths: proxies that train to well above chance in 2 epochs at 8 px.
TINY_SPACE = """
family: tiny
resolution: 32
stem: [{op: conv, out: {choice: [8, 16]}, kernel: 3}]
stages:
- blocks:
  - repeat: {range: [1, 3]}
    skip: {choice: [none, residual]}
    act: true
    branches: [[{op: conv, out: 16, kernel: 3}, {op: conv, out: {choice: [16, 24]}, kernel: 3, order: cn}]]
  - branches: [[{op: pool, kernel: 2, stride: 2}]]
"""
RESIDUAL = {"name": "tinyres", "resolution": 32, "stem": [{"op": "conv", "out": 16, "kernel": 3}],
            "stages": [{"blocks": [{"repeat": 3, "skip": "residual", "act": True, "branches": [[
                {"op": "conv", "out": 16, "kernel": 3}, {"op": "conv", "out": 16, "kernel": 3, "order": "cn"}]]}]}]}
PLAIN = {**RESIDUAL, "name": "tinyplain",
         "stages": [{"blocks": [{**RESIDUAL["stages"][0]["blocks"][0], "skip": "none"}]}]}
QUICK = ["--dataset", "digits", "--epochs", "2", "--proxy-resolution", "8", "--batch-size", "64", "--proxy-width", "1", "--device", "cpu"]


def explore(*args, cwd, check=True):
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(ROOT)}  # tiny nets: one thread is fastest
    run = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True, env=env,
                         timeout=300)
    if check:
        assert run.returncode == 0, run.stderr + run.stdout
    return run


def load(cwd, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/studies/{name}/study.db")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """One study for pre-screening, fidelity and lesion: 3 of 3 candidates, stochastic depth, pruning on."""
    cwd = tmp_path_factory.mktemp("beyond")
    (cwd / "tiny.yaml").write_text(TINY_SPACE)
    (cwd / "res.yaml").write_text(json.dumps(RESIDUAL))
    run = explore("search", "--budget", "2GFLOPs", "--trials", "3", "--study", "s", "--space", "tiny.yaml",
                  "--prescreen", "3", "--prescreen-score", "synflow", "--stochastic-depth", "0.5", "--prune", "pareto",
                  *QUICK, cwd=cwd)
    return cwd, run


# --------------------------------------------------------------------------- pre-screening

def test_prescreen_trains_the_best_scoring_candidate(screened):
    cwd, run = screened
    study = load(cwd, "s")
    trials = study.get_trials()
    stored = Settings.from_json(study.user_attrs["explore:settings"])
    assert (stored.prescreen, stored.prescreen_score, stored.stochastic_depth) == (3, "synflow", 0.5)
    done = [t for t in trials if t.state == COMPLETE]
    assert len(done) == 3
    space_doc = load_space(cwd / "tiny.yaml")
    for t in done:
        record = t.user_attrs["prescreen"]
        scores = [c["score"] for c in record["candidates"]]
        assert len(scores) == 3 and record["score"] == "synflow"
        assert scores[record["chosen"]] == max(scores)
        assert record["candidates"][record["chosen"]]["digest"] == t.user_attrs["digest"]  # the trained one
        # the Optuna params reproduce the trained genotype, replaced draw or not
        assert space.digest(sample(space_doc, FixedSource(t.params), short=True)) == t.user_attrs["digest"]
    replaced = [t for t in trials if "replaced" in t.user_attrs]
    for t in replaced:
        assert t.state == PRUNED and "rejected" not in t.user_attrs and "accuracy" not in t.user_attrs
        winner = [d for d in done if d.user_attrs["prescreen"]["of_trial"] == t.number]
        assert winner and winner[0].number > t.number
    assert f"{len(replaced)} draws replaced by --prescreen" in run.stdout or not replaced


def test_new_settings_keep_old_studies_loadable_and_refuse_changes():
    old = json.loads(Settings(budget=1).to_json())
    for key in ("prescreen", "prescreen_score", "stochastic_depth", "prune", "prune_k"):
        del old[key]
    loaded = Settings.from_json(json.dumps(old))
    assert loaded.differences(Settings(budget=1)) == []
    assert loaded.prescreen == 1 and loaded.prune == "none" and loaded.stochastic_depth is None
    assert any("prescreen" in d for d in Settings(budget=1, prescreen=4).differences(loaded))
    assert Settings(budget=1, stochastic_depth=0.5).differences(loaded) == ["stochastic depth off → 0.5"]
    assert Settings(budget=1, prune="pareto", prune_k=1).differences(loaded) == []  # pruning may change on resume


# --------------------------------------------------------------------------- Pareto pruning

def test_the_domination_rule():
    assert pruning.dominates((1, 0.9), (2, 0.8))
    assert pruning.dominates((1, 0.9), (1, 0.8)) and pruning.dominates((1, 0.9), (2, 0.9))
    assert not pruning.dominates((1, 0.9), (1, 0.9))          # equal is not better
    assert not pruning.dominates((1, 0.7), (2, 0.8))          # cheaper but worse: a trade-off
    others = [(1e6, 0.60), (2e6, 0.60), (3e6, 0.55), (4e6, 0.90), (1e6, 0.40)]
    assert pruning.dominated_by((3e6, 0.55), others) == 2      # the two cheaper, more accurate ones; not its equal
    assert pruning.dominated_by((3e6, 0.45), others) == 3      # ... and the equally cheap, more accurate one
    assert pruning.should_prune(3e6, 0.55, others, k=2) and not pruning.should_prune(3e6, 0.55, others, k=3)
    assert not pruning.should_prune(0.5e6, 0.0, others, k=1)   # the cheapest is never dominated


def test_points_at_epoch_come_from_intermediate_values():
    trials = []
    for number, (flops, values) in enumerate([(1e6, {1: 0.3, 2: 0.5}), (2e6, {1: 0.4}), (3e6, {})]):
        t = optuna.trial.create_trial(state=PRUNED, intermediate_values=values, user_attrs={"flops": flops})
        t.number = number
        trials.append(t)
    assert pruning.points_at_epoch(trials, 1) == [(1e6, 0.3), (2e6, 0.4)]
    assert pruning.points_at_epoch(trials, 2) == [(1e6, 0.5)]   # only trials that reached epoch 2
    assert pruning.points_at_epoch(trials, 1, exclude=0) == [(2e6, 0.4)]


FIXED_FLOPS_SPACE = """
family: fixed
resolution: 32
act: {choice: [relu, relu6, silu, gelu, hardswish]}
stem: [{op: conv, out: 8, kernel: 3}]
stages: [{blocks: [{branches: [[{op: conv, out: 8, kernel: 3}]]}]}]
"""


def test_dominated_trials_are_stopped_and_recorded(tmp_path, monkeypatch):
    """Every draw costs the same FLOPs; scripted accuracies make trial 2 dominated at epoch 1 by trials 0 and 1."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fixed.yaml").write_text(FIXED_FLOPS_SPACE)
    script = iter([[0.5, 0.8, 0.9], [0.5, 0.8, 0.9],
                   [0.1, 0.9, 0.9],      # dominated at epoch 1 by trials 0 and 1
                   [0.5, 0.2, 0.95],     # equal at epoch 1 (not dominated), dominated at epoch 2
                   [0.6, 0.8, 0.3],      # equal at epoch 2; never stopped after its last epoch
                   [0.7, 0.9, 0.9]])

    def scripted(model, data, recipe, device, on_epoch=None, **options):
        accuracies = next(script)
        for epoch, acc in enumerate(accuracies[:recipe.epochs], 1):
            on_epoch(epoch, acc)
        return Result(accuracies[-1], accuracies, recipe.epochs, 0.01, 0.01, 1.0, "cpu")

    monkeypatch.setattr(search, "train", scripted)
    explicit = dict(budget="2GFLOPs", dataset="digits", space="fixed.yaml", trials=4, epochs=3, proxy_resolution=8, sampler="random",
                    prune="pareto", prune_k=2)
    runner.search_command(explicit, "pr", None, "cpu", None, False, runner.Console(file=open(os.devnull, "w")))
    trials = load(tmp_path, "pr").get_trials()
    assert [t.state for t in trials] == [COMPLETE, COMPLETE, PRUNED, PRUNED, COMPLETE, COMPLETE]
    assert [t.user_attrs.get("pruned_at_epoch") for t in trials] == [None, None, 1, 2, None, None]
    stopped = trials[2]
    assert "rejected" not in stopped.user_attrs and "accuracy" not in stopped.user_attrs
    assert stopped.intermediate_values == {1: 0.1} and stopped.user_attrs["history"] == [0.1]
    assert trials[3].intermediate_values == {1: 0.5, 2: 0.2}


# --------------------------------------------------------------------------- fidelity

def test_fidelity_measures_and_stores_rank_agreement(screened):
    cwd, _ = screened
    from explorer.analysis.fidelity import reference_of
    from explorer.studies.store import settings_of
    run = explore("fidelity", "s", "--top", "2", "--random", "1", "--epochs-multiplier", "1", "--device", "cpu",
                  cwd=cwd)
    study = load(cwd, "s")
    record = json.loads(study.user_attrs["explore:fidelity"])
    # the one reference definition: 3x the training images; its epochs x 1 here
    assert record["reference"] == dataclasses.asdict(reference_of(settings_of(study), 1))
    assert record["reference"]["train_images"] == 3 * record["proxy"]["train_images"]
    assert record["epochs"] == record["proxy_epochs"] == 2 and record["dataset"] == "digits"
    assert [r["picked"] for r in record["trials"]] == ["top", "top", "random"]
    for r in record["trials"]:
        assert 0 <= r["long_accuracy"] <= 1 and 0 <= r["long_test_accuracy"] <= 1
        assert set(r["scores"]) == {"synflow", "naswot", "snip", "grad_norm", "params"}
    proxy = record["correlations"]["proxy accuracy"]
    assert proxy["n"] == 3 and (proxy["kendall_tau"] is None or -1 <= proxy["kendall_tau"] <= 1)
    for name in ("synflow", "params"):
        c = record["correlations"][name]
        assert -1 <= c["kendall_tau"] <= 1 and -1 <= c["spearman_rho"] <= 1
    assert "Kendall tau" in run.stdout and "Spearman rho" in run.stdout and "multiply-adds" in run.stdout
    # the top of each ranking, with intervals; at 3 trials the @5 metrics would say nothing and are not shown
    assert set(record["top_k"]) == set(record["correlations"])
    top = record["top_k"]["proxy accuracy"]
    assert top["regret"]["n"] == 3 and 0 <= top["regret"]["low"] <= top["regret"]["value"] <= top["regret"]["high"]
    assert "the top of each ranking" in run.stdout and "regret" in run.stdout and "BR@5" not in run.stdout
    explore("report", "s", cwd=cwd)  # the report reads the same typed record
    page = (cwd / "studies" / "s" / "report.html").read_text()
    assert "<h2>Proxy fidelity</h2><p class='note'>3 trials retrained for 2 epochs" in page
    assert "<th>tau_top_half</th><th>regret</th>" in page


def test_a_reference_equal_to_the_proxy_reproduces_every_trial(screened, one_torch_thread):
    """The retraining rebuilds each trial's proxy from its genotype and seed: with the proxy's own
    settings as the reference, every accuracy comes back exactly."""
    from explorer.analysis import fidelity
    from explorer.studies.store import settings_of
    cwd, _ = screened
    study = load(cwd, "s")
    settings = settings_of(study)
    record = fidelity.run(study, settings, top=2, n_random=1, device="cpu", ref=settings.proxy)
    for r in record.trials:
        assert r.long_accuracy == pytest.approx(r.proxy_accuracy, abs=1e-9)
    proxy = record.correlations["proxy accuracy"]
    assert proxy["kendall_tau"] == pytest.approx(1) and proxy["spearman_rho"] == pytest.approx(1)
    assert fidelity.stored(study) == record  # the typed record survives its stored JSON
    study.set_user_attr(fidelity.FIDELITY_KEY, json.dumps({"version": 1, "trials": []}))
    assert fidelity.stored(study) is None  # a record of another shape is left to `explore fidelity` to rewrite


def test_correlations_of_degenerate_columns_are_null():
    from explorer.analysis.fidelity import correlation, pick_trials
    assert correlation([1, 1, 1], [0.1, 0.2, 0.3])["kendall_tau"] is None
    assert correlation([1, float("nan")], [0.1, 0.2])["n"] == 1
    c = correlation([3, 2, 1], [0.1, 0.2, 0.3])
    assert c["kendall_tau"] == pytest.approx(-1) and c["spearman_rho"] == pytest.approx(-1)
    trials = [optuna.trial.create_trial(values=[acc, 1.0]) for acc in (0.5, 0.9, 0.7, 0.1, 0.3)]
    for i, t in enumerate(trials):
        t.number = i
    picked = pick_trials(trials, 2, 2, seed=0)
    assert [p[1].number for p in picked[:2]] == [1, 2] and len(picked) == 4
    assert picked == pick_trials(trials, 2, 2, seed=0)


# --------------------------------------------------------------------------- lesion

@pytest.fixture(scope="module")
def digits8():
    return datasets.load("digits", resolution=8, seed=0)


def test_a_deleted_identity_block_passes_its_input_through(digits8):
    torch.manual_seed(0)
    model = space.build(space.load(RESIDUAL), 10, 1, 8).eval()
    blocks = lesion.blocks_of(model)
    assert [lesion.kind(b) for _, b in blocks] == ["residual"] * 3
    name, block = blocks[1]
    assert isinstance(block.shortcut, torch.nn.Identity)
    seen = {}
    block.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0], y=out))
    x = torch.randn(4, 1, 8, 8)
    before = model(x)
    assert not torch.equal(seen["x"], seen["y"])
    with lesioned([block]):
        deleted = model(x)
    assert torch.equal(seen["y"], seen["x"])                  # output = input of that block
    assert not torch.equal(deleted, before)
    assert torch.equal(model(x), before)


def test_plain_blocks_are_not_deletable(digits8):
    model = space.build(space.load(PLAIN), 10, 1, 8)
    assert [lesion.deletable(b) for _, b in lesion.blocks_of(model)] == [False] * 3
    s = lesion.Subject("plain", space.load(PLAIN), 0, model=model.eval())
    lesion.profile(s, digits8, torch.device("cpu"))
    assert all(not b["deletable"] and b["drop"] is None for b in s.blocks)


def test_explore_lesion_writes_the_plot(screened):
    cwd, _ = screened
    first = min(t.number for t in load(cwd, "s").get_trials() if t.state == COMPLETE)
    run = explore("lesion", "s", "--trial", str(first), "--compare", "res.yaml", "--k", "2", "--draws", "2",
                  "--device", "cpu", cwd=cwd)
    page = cwd / "studies" / "s" / f"lesion-{first}.html"
    assert page.exists() and "plotly" in page.read_text()[:100_000].lower()
    assert "tinyres" in run.stdout and "accuracy drop" in page.read_text()
    assert len(list((cwd / "studies" / "s" / "weights").glob("*.pt"))) == 2  # kept for the next run
    bad = explore("lesion", "res.yaml", cwd=cwd, check=False)
    assert bad.returncode == 2 and "--study" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- stochastic depth

def test_survival_decays_linearly_to_p_last():
    model = space.build(space.load({**RESIDUAL, "stages": RESIDUAL["stages"] * 2}), 10, 1, 8)
    p = stochastic_depth(model, 0.5)
    assert len(p) == 6 and p[-1] == pytest.approx(0.5)
    assert p == pytest.approx([1 - l / 6 * 0.5 for l in range(1, 7)])
    assert [b.survival for b in residual_blocks(model)] == p
    plain = space.build(space.load(PLAIN), 10, 1, 8)
    assert stochastic_depth(plain, 0.5) == [] and all(b.survival == 1.0 for b in plain.modules() if isinstance(b, Block))
    with pytest.raises(ValueError):
        stochastic_depth(model, 0.0)


def test_stochastic_depth_drops_in_training_and_scales_in_evaluation():
    torch.manual_seed(0)
    model = space.build(space.load(RESIDUAL), 10, 1, 8)
    stochastic_depth(model, 0.5)
    block = residual_blocks(model)[-1]                        # survives with p = 0.5
    x = torch.randn(4, 16, 8, 8)
    block.eval()
    y = block(x)
    branch = block.post(super(Block, block).forward(x))
    assert torch.allclose(y, block.act(x + 0.5 * branch))     # the branch scaled by p_l at test time
    assert torch.equal(block(x), y)                           # deterministic
    model.eval()
    inp = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(inp), model(inp))
    block.train()
    dropped = [torch.equal(block(x), block.act(x)) for _ in range(40)]
    assert 5 < sum(dropped) < 35                              # the whole branch, for the whole batch, p = 0.5
