"""Browsing results: plot, report, pareto, edf, export, train, and the statistics behind them.

One tiny real study (MobileNet space, 8 px proxies, one epoch) is searched once for the module,
and xception is trained into it as an out-of-space, over-budget reference point.
"""
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

import space
from cli import app
from explorer.analysis import diff, figures, pareto, report, stats
from explorer.analysis import export as exp
from explorer.base.errors import UserError
from explorer.base.settings import Settings
from explorer.commands import reference
from explorer.studies.store import SETTINGS_KEY, settings_of
from space.named import named
from space.sampling import match

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--dataset", "digits", "--space", "mobilenet", "--epochs", "1", "--proxy-resolution", "8", "--batch-size", "128",
         "--proxy-width", "0.05"]
SEARCH_ATTRS = {"genotype", "digest", "family", "flops", "params", "proxy_genotype", "proxy_flops", "proxy_params",
                "accuracy", "wall_time", "history", "device", "dataset", "val_images"}
States = optuna.trial.TrialState


def explore_subprocess(*args, cwd, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True, env=env,
                         timeout=300)
    if check:
        assert run.returncode == 0, run.stderr + run.stdout
    return run


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A directory holding studies/s: 3 searched trials (mobilenet enqueued first) and xception as a reference."""
    cwd = tmp_path_factory.mktemp("report")
    explore_subprocess("search", "--budget", "1GFLOPs", "--trials", "3", "--study", "s", *QUICK, cwd=cwd)
    with pytest.MonkeyPatch.context() as mp:  # in-process: no second start-up of torch
        mp.chdir(cwd)
        run = CliRunner().invoke(app, ["train", "xception", "--study", "s", "--device", "cpu"])
    assert run.exit_code == 0, run.output
    assert "not in the study's space" in run.stdout and "over the study's budget" in run.stdout
    return cwd


@pytest.fixture
def cli(home, monkeypatch):
    """Run the CLI in-process (fast) from the study's directory."""
    monkeypatch.chdir(home)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, list(args))
    return invoke


def load(home):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{home}/studies/s/study.db")


def completed(home):
    return load(home).get_trials(states=(States.COMPLETE,))


# ---------------------------------------------------------------------------- the Pareto plot

def test_plot_is_an_offline_page_with_one_marker_per_trial(cli, home):
    run = cli("plot", "s", "--no-open")
    assert run.exit_code == 0, run.output
    page = (home / "studies" / "s" / "pareto.html").read_text()
    assert "cdn.plot.ly" not in page and not re.search(r"<script[^>]+src=", page)
    assert "FLOPs (multiply-adds)" in page
    study = load(home)
    fig = pareto.figure("s", pareto.points(study), resolution=224, budget=10 ** 9)
    markers = [t for t in fig.data if t.meta == "trials"]
    assert sum(len(t.x) for t in markers) == len(completed(home))
    assert "FLOPs (multiply-adds)" in fig.layout.xaxis.title.text and fig.layout.xaxis.type == "log"
    star = [t for t in markers if t.marker.symbol == "star"]
    assert any("xception" in t.text for t in star), "the reference is a labelled star"
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["x: FLOPs (multiply-adds)", "x: parameters"]
    run = cli("plot", "s", "--no-open", "--x", "params")
    assert run.exit_code == 0
    assert "accuracy against parameters" in (home / "studies" / "s" / "pareto.html").read_text()
    assert cli("plot", "s", "--no-open", "--x", "watts").exit_code == 2


def test_the_front_is_a_staircase_and_dominated_points_fade():
    pts = [pareto.Point(i, acc, flops, params, fam, {}, None) for i, (acc, flops, params, fam) in enumerate(
        [(0.5, 100, 10, "residual"), (0.7, 300, 5, "residual"), (0.6, 400, 50, "dense"), (0.9, 900, 90, "dense"),
         (0.4, 50, 80, "mobilenet")])]
    assert [p.number for p in pareto.front(pts)] == [4, 0, 1, 3]
    assert [p.number for p in pareto.front(pts, "params")] == [1, 3]  # cheapest by params first
    fig = pareto.figure("t", pts)
    line = next(t for t in fig.data if t.meta == "front" and t.visible)
    assert line.line.shape == "hv" and list(line.x) == sorted(line.x) and list(line.y) == [0.4, 0.5, 0.7, 0.9]
    dense = next(t for t in fig.data if t.meta == "trials" and t.name == "dense")
    assert list(dense.marker.opacity) == [0.3, 1.0]  # trial 2 is dominated by trial 1
    params_button = fig.layout.updatemenus[0].buttons[1]
    data, layout = params_button.args
    fronts = [i for i, t in enumerate(fig.data) if t.meta == "front"]
    assert [data["visible"][i] for i in fronts] == [False, True] and "parameters" in layout["xaxis.title.text"]


def test_pareto_prints_the_table(cli, home):
    run = cli("pareto", "s")
    assert run.exit_code == 0, run.output
    assert "Pareto front of s" in run.stdout and "nearest named" in run.stdout
    pts = pareto.points(load(home))
    for p in pareto.front(pts):
        assert re.search(rf"│\s+{p.number}\s+│", run.stdout)
    # the noise floor: digits' validation split, and the binomial standard error of the best accuracy
    assert {p.val_images for p in pts} == {144}
    best = max(p.accuracy for p in pts)
    assert "validation: 144 images" in run.stdout
    assert f"standard error is {(best * (1 - best) / 144) ** 0.5:.4f}" in run.stdout


# ---------------------------------------------------------------------------- the reference point

def test_train_stores_a_labelled_reference_with_search_attrs(home):
    study = load(home)
    ref = [t for t in study.trials if t.user_attrs.get("reference") == "xception"]
    assert len(ref) == 1 and ref[0].state == States.COMPLETE
    t = ref[0]
    assert SEARCH_ATTRS <= set(t.user_attrs) and t.params == {}  # not in the mobilenet space
    assert t.user_attrs["digest"] == space.digest(named("xception")) and t.user_attrs["family"] == "separable"
    assert t.values[1] == t.user_attrs["flops"] == space.complexity(named("xception"), 224, 1000).flops
    assert t.values[0] == t.user_attrs["accuracy"] and list(t.intermediate_values) == [1]
    assert "over_budget" in t.user_attrs
    searched = next(x for x in study.trials if x.state == States.COMPLETE and "reference" not in x.user_attrs)
    assert set(searched.user_attrs) - {"train_images_per_s"} <= set(t.user_attrs)


def test_train_in_space_records_the_params_and_is_idempotent(home, monkeypatch):
    monkeypatch.chdir(home)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{home}/studies/s/study.db")
    again = reference.train_reference(study, "mobilenet", named("mobilenet"), "cpu")
    assert again.existing and again.number == 0  # enqueued at creation; nothing trained
    settings = settings_of(study)
    before = len(study.trials)
    done = reference.train_reference(study, "mobilenet", named("mobilenet"), "cpu", force=True)
    assert not done.existing and done.in_space and not done.over_budget and done.number == before
    t = load(home).trials[done.number]
    assert t.state == States.COMPLETE and t.user_attrs["reference"] == "mobilenet"
    assert t.params == match(settings.space_doc, named("mobilenet"), short=True) and t.distributions
    assert t.user_attrs["digest"] == space.digest(named("mobilenet"))


def test_train_errors_are_one_line(cli):
    run = cli("train", "nonesuch", "--study", "s")
    assert run.exit_code == 2 and "unknown genotype" in run.stderr
    run = cli("train", "xception", "--study", "nope")
    assert run.exit_code == 2 and "no study named 'nope'" in run.stderr


# ---------------------------------------------------------------------------- the report

def test_report_is_one_self_contained_page(cli, home):
    run = cli("report", "s", "--by", "family", "--by", "depth")
    assert run.exit_code == 0, run.output
    page = (home / "studies" / "s" / "report.html").read_text()
    assert page.count("* plotly.js v") == 1, "plotly.js is inlined exactly once"
    assert "cdn.plot.ly" not in page and not re.search(r"<(script|link|img)[^>]+(src|href)=.?https?:", page)
    figures = json.loads(re.search(r'<script type="application/json" id="figures">(.*?)</script>', page,
                                   re.S).group(1).replace("<\\/", "</"))
    trials = [t for t in figures["pareto"]["data"] if t.get("meta") == "trials"]
    assert sum(len(t["x"]) for t in trials) == len(completed(home))
    assert {"hypervolume", "timeline", "edf-family", "edf-family-norm", "edf-depth", "edf-depth-norm"} <= set(figures)
    front = pareto.front(pareto.points(load(home)))
    table = re.search(r"<table id='pareto-table'.*?</table>", page, re.S).group(0)
    assert table.count("<tr>") == len(front) + 1
    for p in front:
        assert f"graph-{p.number}" in figures, "each Pareto genotype has its network graph"
        assert f"<details class='graph' data-fig='graph-{p.number}'>" in page
    for text in ("budget", "1.00 GFLOPs (multiply-adds)", "mobilenet (digest", "optuna-dashboard sqlite:///",
                 "Timeline", "Hypervolume", "FLOP-normalised"):
        assert text in page, text


def test_report_lists_failures_and_rejections_with_reasons(home, tmp_path, monkeypatch):
    """A copy of the study with a failed trial and a rejected draw added."""
    import shutil
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies" / "s").mkdir(parents=True)
    shutil.copy(home / "studies" / "s" / "study.db", tmp_path / "studies" / "s" / "study.db")
    study = optuna.load_study(study_name="s", storage="sqlite:///studies/s/study.db")
    study.add_trial(optuna.trial.create_trial(state=States.FAIL, user_attrs={"fail_reason": "diverged: loss is nan",
                                                                              "family": "mobilenet"}))
    study.add_trial(optuna.trial.create_trial(state=States.PRUNED,
                                              user_attrs={"rejected": "over budget: 2.00 GFLOPs > 1.00 GFLOPs"}))
    path = report.write_report("s", None, ["separable"])
    page = path.read_text()
    assert "diverged: loss is nan" in page and "over budget: 2.00 GFLOPs &gt; 1.00 GFLOPs" in page
    assert "Failed trials (1)" in page and "Rejected draws (1: 1 over budget)" in page


def test_hypervolume_matches_optuna():
    from optuna._hypervolume import compute_hypervolume
    rng = random.Random(3)
    for _ in range(20):
        budget = 1e9
        pts = [(rng.random(), rng.uniform(1e7, 1.2e9)) for _ in range(rng.randint(1, 12))]
        inside = np.array([(-a, f / budget) for a, f in pts if f <= budget])
        expected = compute_hypervolume(inside, np.array([0.0, 1.0])) if len(inside) else 0.0
        assert math.isclose(figures.hypervolume(pts, budget), expected, rel_tol=1e-9, abs_tol=1e-12)
    numbers, values = figures.hypervolume_history(
        [pareto.Point(i, a, f, 1, "x", {}, None) for i, (a, f) in enumerate([(0.5, 5e8), (0.4, 6e8), (0.8, 2e8)])], 1e9)
    assert numbers == [0, 1, 2] and values == sorted(values) and values[-1] == pytest.approx(0.8 * 0.8)


def test_diff_names_changed_fields_by_path():
    g = space.dump(named("resnet50"))
    g["stages"][2]["blocks"][0]["repeat"] = 3
    g["act"] = "silu"
    del g["stages"][3]
    lines = diff.genotype_diff("resnet50", g)
    assert "stages[2].blocks[0].repeat: 6 → 3" in lines
    assert 'act: "relu" → "silu"' in lines
    assert any(line.startswith("- stages[3]: {") for line in lines)
    assert diff.genotype_diff("resnet50", space.dump(named("resnet50"))) == []


# ---------------------------------------------------------------------------- EDFs and the KS statistic

def test_edf_command_writes_the_page_and_prints_groups(cli, home):
    run = cli("edf", "s", "--by", "width")
    assert run.exit_code == 0, run.output
    assert "error (1 - proxy accuracy) by width" in run.stdout and "EDFs:" in run.stdout
    page = (home / "studies" / "s" / "edf.html").read_text()
    assert "error EDF by width" in page and "n=" in page and "min " in page and "mean " in page
    run = cli("edf", "s", "--by", "family", "--flop-normalised")
    assert run.exit_code == 0 and "FLOP-normalised" in run.stdout
    run = cli("edf", "s", "--by", "colour")
    assert run.exit_code == 2 and "--by: unknown field 'colour'" in run.stderr


def test_edf_and_ks():
    xs, ys = stats.edf(np.array([0.3, 0.1, 0.2, 0.2]))
    assert xs.tolist() == [0.1, 0.2, 0.3] and ys.tolist() == [0.25, 0.75, 1.0]
    xs, ys = stats.edf(np.array([0.1, 0.2]), np.array([0.25, 0.75]))
    assert ys.tolist() == [0.25, 1.0]
    from scipy.stats import ks_2samp
    rng = np.random.default_rng(0)
    for _ in range(10):
        a, b = rng.random(rng.integers(2, 30)), rng.random(rng.integers(2, 30)) * 1.3
        ga, gb = stats.Group("a", a, np.ones(len(a))), stats.Group("b", b, np.ones(len(b)))
        assert stats.ks(ga, gb) == pytest.approx(ks_2samp(a, b).statistic)
        assert stats.ks_pvalue(ga, gb) == pytest.approx(ks_2samp(a, b).pvalue)
    g = stats.Group("x", np.array([0.2, 0.4]), np.ones(2))
    assert g.legend() == "x (n=2, min 0.200, mean 0.300)"


def test_flop_normalisation_gives_every_group_the_same_flop_distribution():
    rng = np.random.default_rng(1)
    cheap = stats.Group("cheap", rng.random(40), 10 ** rng.uniform(7, 8.5, 40))
    costly = stats.Group("costly", rng.random(40), 10 ** rng.uniform(7.5, 9, 40))
    normed = stats.normalise([cheap, costly], bins=4)
    edges = stats.flop_bins([cheap, costly], bins=4)
    hist = [np.histogram(np.log10(g.flops), edges, weights=g.weights)[0] for g in normed]
    shared = (hist[0] > 0) & (hist[1] > 0)
    assert np.allclose(hist[0][shared] / hist[0][shared].sum(), hist[1][shared] / hist[1][shared].sum())
    assert all(math.isclose(g.weights.sum(), 1.0) for g in normed)
    # an unweighted group's weights are uniform, and its normalised mean is a weighted mean
    assert normed[0].mean == pytest.approx(float(np.sum(normed[0].weights * cheap.errors)))


@pytest.mark.parametrize("name,field,value", [
    ("resnet50", "residual", "yes"), ("vgg16", "residual", "no"), ("densenet121", "dense", "yes"),
    ("xception", "separable", "yes"), ("resnet50", "separable", "no"), ("preact_resnet164", "preact", "yes"),
    ("resnet50", "preact", "no"), ("resnet50", "depth", "9-16"), ("mobilenet", "width", "x1"),
    ("mobilenet", "family", "mobilenet"), ("resnet50", "act", "relu"), ("resnet50", "stages[2].blocks[0].repeat", "6"),
    ("resnet50", "head.dropout", "0.0"), ("resnet50", "stages[9].name", "(absent)"),
])
def test_grouping_fields(name, field, value):
    assert stats.field_value(named(name), field) == value


def test_unknown_fields_name_the_choices():
    with pytest.raises(UserError, match="residual, highway, dense, separable, preact, depth, width"):
        stats.check_field("colour")


# ---------------------------------------------------------------------------- export

def test_export_genotype_yaml_and_json(cli, home, tmp_path):
    t = next(t for t in completed(home) if "reference" not in t.user_attrs)
    for fmt in ("yaml", "json"):
        out = tmp_path / f"g.{fmt}"
        run = cli("export", "s", "--trial", str(t.number), "--format", fmt, "-o", str(out))
        assert run.exit_code == 0, run.output
        assert space.digest(space.load(out.read_text())) == t.user_attrs["digest"]


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_export_torchscript_keeps_the_parameter_count(cli, home, tmp_path):
    import torch
    t = next(t for t in completed(home) if "reference" not in t.user_attrs)
    out = tmp_path / "net.pt"
    run = cli("export", "s", "--trial", str(t.number), "--format", "torchscript", "-o", str(out))
    assert run.exit_code == 0, run.output
    model = torch.jit.load(str(out))
    assert sum(p.numel() for p in model.parameters()) == t.user_attrs["params"]
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_export_onnx_keeps_the_parameter_count(cli, home, tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'explore[onnx]' to test ONNX export")
    t = next(t for t in completed(home) if "reference" not in t.user_attrs)
    out = tmp_path / "net.onnx"
    run = cli("export", "s", "--trial", str(t.number), "--format", "onnx", "-o", str(out))
    assert run.exit_code == 0, run.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert exp.onnx_param_count(model) == t.user_attrs["params"]
    assert f"{t.user_attrs['params']:,} parameters" in run.stdout


def test_trial_onnx_in_onnxruntime_equals_torch(cli, home, tmp_path):
    """A searched trial exported with weights: onnxruntime's logits equal torch's within 1e-4 relative."""
    import torch
    from test_export import check_onnx_against_torch, perturbed_state
    t = next(t for t in completed(home) if "reference" not in t.user_attrs)
    g = space.load(json.loads(t.user_attrs["genotype"]))
    state = perturbed_state(g, 1000)
    torch.save(state, tmp_path / "w.pt")
    run = cli("export", "s", "--trial", str(t.number), "--weights", str(tmp_path / "w.pt"), "-f", "onnx",
              "-o", str(tmp_path / "t.onnx"))
    assert run.exit_code == 0, run.output
    assert f"trial {t.number}'s network (224px, 1000 classes" in run.stdout
    check_onnx_against_torch(tmp_path / "t.onnx", g, state, 224, 1000)


def test_export_a_study_without_trial_says_add_trial(cli, tmp_path):
    run = cli("export", "s", "-f", "onnx", "-o", str(tmp_path / "x.onnx"))
    assert run.exit_code == 2 and "'s' is a study: add --trial N" in run.stderr


def test_export_without_onnx_says_how_to_install_it(cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    run = cli("export", "s", "--trial", "1", "--format", "onnx", "-o", str(tmp_path / "x.onnx"))
    assert run.exit_code == 2
    assert "ONNX export needs the onnx package: pip install 'explore[onnx]'" in run.stderr


def test_plot_png_without_kaleido_says_how_to_install_it(cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido now raises ImportError
    run = cli("plot", "s", "--no-open", "--png", str(tmp_path / "p.png"))
    assert run.exit_code == 2 and not (tmp_path / "p.png").exists()
    assert "--png needs kaleido, plotly's image exporter: pip install 'explore[png]'" in run.stderr


@pytest.mark.parametrize("args,phrase", [
    (["--trial", "99", "--format", "yaml"], "no trial 99"),
    (["--trial", "1", "--format", "png"], "--format: unknown format 'png'"),
])
def test_export_errors(cli, tmp_path, args, phrase):
    run = cli("export", "s", *args, "-o", str(tmp_path / "x"))
    assert run.exit_code == 2 and phrase in run.stderr


# ---------------------------------------------------------------------------- studies with nothing to show

def _bare_study(cwd, name, trials=()):
    (cwd / "studies" / name).mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{cwd}/studies/{name}/study.db",
                                directions=["maximize", "minimize"])
    study.set_user_attr(SETTINGS_KEY, Settings(budget=10 ** 9).to_json())
    for t in trials:
        study.add_trial(t)


@pytest.mark.parametrize("command", [["plot", "--no-open"], ["report"], ["pareto"], ["edf"]])
def test_nothing_to_show_is_a_one_line_error(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _bare_study(tmp_path, "empty")
    _bare_study(tmp_path, "failing", [optuna.trial.create_trial(state=States.FAIL,
                                                                user_attrs={"fail_reason": f"diverged: nan {i}"})
                                      for i in range(2)])
    runner = CliRunner()
    cases = {"nosuch": "no study named 'nosuch'", "empty": "has no trials yet",
             "failing": "all 2 finished trials failed (last, trial 1: diverged: nan 1)"}
    for study, phrase in cases.items():
        run = runner.invoke(app, [command[0], study, *command[1:]])
        assert run.exit_code == 2, (study, run.output)
        assert phrase in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "studies" / "empty" / "report.html").exists()
    assert not (tmp_path / "studies" / "failing" / "pareto.html").exists()


def test_errors_in_a_real_process_are_one_line_without_traceback(tmp_path):
    run = explore_subprocess("report", "nosuch", cwd=tmp_path, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "no study named 'nosuch'" in run.stderr
