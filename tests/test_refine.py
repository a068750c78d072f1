"""Design-space refinement: `explore axes`, `refine` and `compare` on studies whose errors follow a known
rule (tests/refine_helpers.py), so the good region the analysis must find is known."""
import json

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from refine_helpers import constructed_study, good_residual, residual_error
from scipy.stats import ks_2samp
from typer.testing import CliRunner

from cli import app
from explorer.analysis import axes, compare, refine, stats
from explorer.studies.store import SETTINGS_KEY, SPACE_KEY, settings_of
from space.named import named
from space.sampling import RandomSource, load_space, match, option_labels, rewrite, sample

TRIALS = 80


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """studies/good (80 draws from the residual space, the known rule), studies/worse (the same rule, 0.1 worse)
    and studies/few (10 draws)."""
    cwd = tmp_path_factory.mktemp("refine")
    for name, trials, seed, shift in (("good", TRIALS, 0, 0.0), ("worse", 40, 1, 0.1), ("few", 10, 2, 0.0)):
        (cwd / "studies" / name).mkdir(parents=True)
        constructed_study(name, f"sqlite:///{cwd}/studies/{name}/study.db", trials, seed,
                          error_of=lambda p, f, shift=shift: residual_error(p, f) + shift)
    return cwd


@pytest.fixture
def cli(home, monkeypatch):
    monkeypatch.chdir(home)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def study(home, name="good"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{home}/studies/{name}/study.db")


# ---------------------------------------------------------------------------- the bootstrap


def test_bootstrap_good_range_finds_the_good_region_of_a_number_and_of_options():
    rng = np.random.default_rng(0)
    values = list(rng.integers(0, 100, 400))
    errors = np.array([0.1 if 40 <= v <= 60 else 0.5 for v in values]) + rng.uniform(0, 0.05, 400)
    f = axes.good_range("x", "parameter", [int(v) for v in values], errors, True, seed=0)
    assert 40 <= f.low <= f.median <= f.high <= 60 and f.high - f.low >= 10
    options = ["a", "b", "c"] * 50
    errors = np.array([0.1 if o == "a" else 0.3 for o in options]) + rng.uniform(0, 0.05, len(options))
    f = axes.good_range("y", "parameter", options, errors, False, seed=0)
    assert f.good == ["a"] and f.shares["a"] == 1.0 and f.shares["b"] == f.shares["c"] == 0.0


def test_importance_goes_to_the_parameter_that_decides_the_error():
    rng = np.random.default_rng(1)
    rows = [{"matters": int(rng.integers(0, 10)), "noise": str(rng.choice(["x", "y", "z"])), "constant": 3}
            for _ in range(200)]
    errors = np.array([0.1 * (r["matters"] > 2) for r in rows]) + rng.uniform(0, 0.01, 200)
    dists = {"matters": IntDistribution(0, 9), "noise": CategoricalDistribution(["x", "y", "z"]),
             "constant": IntDistribution(3, 3)}
    found = axes.importances(rows, dists, errors)
    assert found["matters"] > 0.8 and found["constant"] == 0.0 and sum(found.values()) == pytest.approx(1.0)
    assert axes.importances(rows[:10], dists, errors[:10]) == {}  # the best tenth of 10 trials is one trial


def test_the_study_analysis_finds_the_known_good_region(home):
    samples = axes.read_samples(study(home))
    assert len(samples) == TRIALS
    for raw in (True, False):
        a = axes.analyse("good", samples, seed=0, raw=raw)
        depth3, scale = a.parameter("residual.depth3"), a.parameter("residual.scale")
        assert depth3.low == 1 and depth3.high <= 12, depth3  # the rule's good region is depth3 <= 8
        assert scale.good[0] == 1.0 and 0.2 not in scale.good and scale.shares["1.0"] > 0.8, scale
        ranked = sorted(a.parameters, key=lambda f: -(f.importance or 0))
        assert {ranked[0].name, ranked[1].name} == {"residual.depth3", "residual.scale"}
        assert depth3.ks > 0.5 and depth3.p < 1e-3  # the trials inside the good range err less
    assert [f.name for f in a.axes] == list(axes.AXES) and a.axes[0].good == ["residual"]


# ---------------------------------------------------------------------------- refine


def _parameters(doc) -> dict:
    found = {}

    def note(name, node):
        found[name] = node
        return node
    rewrite(doc, note, short=True)
    return found


def test_the_refined_space_loads_is_a_subset_and_keeps_the_classics_in_the_good_region(cli, home):
    run = cli("refine", "good", "-o", "refined.yaml")
    assert run.exit_code == 0, run.output
    path = home / "refined.yaml"
    text = path.read_text()
    assert "# - residual.depth3: range [1, 36] -> [1, " in text and "80 trials that took it" in text
    refined, original = load_space(path), settings_of(study(home)).space_doc
    new, old = _parameters(refined), _parameters(original)
    assert set(new) == set(old) and new != old
    for name, node in new.items():
        if "range" in node:
            assert old[name]["range"][0] <= node["range"][0] <= node["range"][1] <= old[name]["range"][1]
        else:
            assert set(option_labels(node)) <= set(option_labels(old[name]))
    for seed in range(10):  # every network of the refined space is one of the original's
        assert match(original, sample(refined, RandomSource(seed), short=True), short=True) is not None
    resnet50 = match(original, named("resnet50"), short=True)
    assert good_residual(resnet50) and match(refined, named("resnet50"), short=True) is not None
    assert match(refined, named("resnet101"), short=True) is None  # depth3 23: outside the good region


def test_refinement_is_deterministic_for_a_seed(cli, home):
    for name in ("a.yaml", "b.yaml"):
        assert cli("refine", "good", "-o", name, "--seed", "3").exit_code == 0
    assert (home / "a.yaml").read_bytes() == (home / "b.yaml").read_bytes()


def test_nothing_to_narrow_is_refused(home):
    analysis = axes.Analysis("good", TRIALS, False, 0, [], [])
    with pytest.raises(axes.UserError, match="nothing to narrow"):
        refine.write_refined(home / "never.yaml", "good", settings_of(study(home)), analysis, False)
    assert not (home / "never.yaml").exists()


@pytest.mark.parametrize("args, phrase", [
    (["refine", "nosuch", "-o", "x.yaml"], "no study named 'nosuch'"),
    (["axes", "nosuch"], "no study named 'nosuch'"),
    (["refine", "few", "-o", "x.yaml"], "has 10 completed drawn trial(s); good ranges need at least 30"),
    (["axes", "few"], "good ranges need at least 30"),
    (["refine", "good", "-o", "exists.yaml"], "exists; pass --force"),
    (["compare", "good", "nosuch"], "no study named 'nosuch'"),
    (["compare", "good", "good"], "at least two different studies"),
    (["axes", "good", "--min-trials", "2"], "--min-trials: 2 is out of range"),
])
def test_refusals_are_one_line(cli, home, args, phrase):
    (home / "exists.yaml").write_text("kept\n")
    run = cli(*args)
    assert run.exit_code == 2 and phrase in run.stderr, run.output
    assert len(run.stderr.strip().splitlines()) == 1
    assert (home / "exists.yaml").read_text() == "kept\n" and not (home / "x.yaml").exists()


def test_an_unreadable_stored_space_is_refused_in_one_line(cli, home, tmp_path, monkeypatch):
    for name, broken in (("nojson", "{not json"), ("nospace", json.dumps({"choice": []}))):
        (home / "studies" / name).mkdir(exist_ok=True)
        s = constructed_study(name, f"sqlite:///{home}/studies/{name}/study.db", 5, 5)
        digest = json.loads(s.user_attrs[SETTINGS_KEY])["space_digest"]
        s._storage.set_study_system_attr(s._study_id, SPACE_KEY + digest, broken)
        run = cli("refine", name, "-o", str(tmp_path / "r.yaml"), "--min-trials", "5")
        assert run.exit_code == 2 and "can't be read" in run.stderr, run.output
        assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.yaml").exists()


def test_refine_replaces_a_file_only_with_force(cli, home):
    (home / "old.yaml").write_text("old\n")
    assert cli("refine", "good", "-o", "old.yaml").exit_code == 2
    assert cli("refine", "good", "-o", "old.yaml", "--force").exit_code == 0
    load_space(home / "old.yaml")


# ---------------------------------------------------------------------------- axes, compare, the report


def test_axes_prints_a_table_and_json(cli):
    run = cli("axes", "good")
    assert run.exit_code == 0 and "residual.depth3" in run.stdout and "design axes" in run.stdout
    data = json.loads(cli("axes", "good", "--json").stdout)
    assert data["trials"] == TRIALS and [a["name"] for a in data["axes"]] == list(axes.AXES)
    depth3 = next(p for p in data["parameters"] if p["name"] == "residual.depth3")
    assert depth3["low"] == 1 and depth3["importance"] > 0.1


def test_compare_statistics_on_constructed_edfs():
    a_errors = np.linspace(0.1, 0.5, 20)
    b_errors = a_errors + 0.1
    flops = np.full(20, 1e9)
    a, b = stats.normalise([stats.Group("a", a_errors, flops), stats.Group("b", b_errors, flops)])
    v = compare.verdict(a, b)
    expected = ks_2samp(a_errors, b_errors, method="asymp")
    assert v.d == pytest.approx(expected.statistic) and v.p == pytest.approx(expected.pvalue, rel=1e-6)
    assert v.better is None  # 20 against 20 at D 0.25: not significant
    far = stats.Group("far", a_errors + 0.3, flops)
    v = compare.verdict(stats.Group("a", a_errors, flops), far)
    assert v.better == "a" and v.dominates and v.p < 0.001
    assert v.line({"a": a, "far": far}).startswith("a is better: its FLOP-normalised error EDF dominates far's")


def test_compare_writes_a_page_and_a_verdict(cli, home):
    run = cli("compare", "worse", "good", "--no-open")
    assert run.exit_code == 0, run.output
    assert "good is better" in run.stdout
    page = (home / "studies" / "worse" / "compare.html").read_text()
    assert "FLOP-normalised error EDFs" in page and "cdn.plot.ly" not in page


def test_the_report_has_a_design_axes_section(cli, home):
    run = cli("report", "good")
    assert run.exit_code == 0, run.output
    page = (home / "studies" / "good" / "report.html").read_text()
    assert "<h2>Design axes</h2>" in page and "id='axes-table'" in page and "axis-depth" in page
