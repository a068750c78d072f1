"""One study summary and one trial record: the CLI table, `pareto --json`, the plot and the report agree
on the front, its axis and its labels, and pruning and progress read the study's objective by name.

The studies here are written by hand (real SQLite storage, real genotypes priced analytically), with
four classics whose fronts differ on each axis, so nothing trains and a disagreement shows.
"""
import json
import re
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import space
from cli import app
from explorer.analysis.pareto import AXIS_TITLES
from explorer.base.settings import RESOLUTIONS, Settings
from explorer.studies.progress import SearchProgress
from explorer.studies.record import TrialRecord, counts
from explorer.studies.store import SETTINGS_KEY
from explorer.sweep import pruning
from explorer.sweep.objective import hooks
from explorer.trial.candidate import Context, price
from space.named import named

States = optuna.trial.TrialState
# name: (accuracy, predicted latency in ms). Front on FLOPs: all four; on params: not alexnet (61M params);
# on latency: googlenet and resnet50 only.
CLASSICS = {"mobilenet": (0.80, 20.0), "alexnet": (0.82, 40.0), "googlenet": (0.85, 5.0), "resnet50": (0.90, 8.0)}
FRONTS = {"flops": {"mobilenet", "alexnet", "googlenet", "resnet50"}, "params": {"mobilenet", "googlenet", "resnet50"},
          "latency": {"googlenet", "resnet50"}}
DRAWN = "googlenet"  # stored as a draw (no reference attr) that happens to be the classic


def _trial(name: str, objective: str) -> optuna.trial.FrozenTrial:
    g = named(name)
    cx = price(g, 224)
    accuracy, ms = CLASSICS[name]
    attrs = {"genotype": space.schema.canonical_json(g), "digest": space.digest(g), "family": g.family,
             "flops": cx.flops, "params": cx.params, "latency_ms": ms, "val_images": 2000}
    if name != DRAWN:
        attrs["reference"] = name
    cost = {"flops": cx.flops, "params": cx.params, "latency": ms}[objective]
    return optuna.trial.create_trial(values=[accuracy, cost], user_attrs=attrs)


def _study(cwd: Path, objective: str) -> str:
    name = f"by-{objective}"
    settings = Settings(budget=0 if objective == "latency" else 10 ** 10, objective=objective,
                        latency_budget=50.0 if objective == "latency" else None)
    (cwd / "studies" / name).mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{cwd}/studies/{name}/study.db",
                                directions=["maximize", "minimize"])
    study.set_user_attr(SETTINGS_KEY, settings.to_json())
    for classic in CLASSICS:
        study.add_trial(_trial(classic, objective))
    study.add_trial(optuna.trial.create_trial(state=States.PRUNED, user_attrs={"rejected": "over budget: 9 > 1"}))
    return name


def _names_of(numbers) -> set[str]:
    return {list(CLASSICS)[n] for n in numbers}


@pytest.mark.parametrize("objective", ["flops", "params", "latency"])
def test_table_json_plot_and_report_agree_on_the_front_its_axis_and_labels(objective, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = _study(tmp_path, objective)
    runner = CliRunner()

    table = runner.invoke(app, ["pareto", study])
    assert table.exit_code == 0, table.output
    rows = [line.split("│")[1:-1] for line in table.stdout.splitlines() if re.match(r"│\s+\d", line)]
    assert _names_of(int(r[1]) for r in rows) == FRONTS[objective]
    assert any(f"{DRAWN} (itself)" in cell for r in rows for cell in r)  # a drawn classic is itself, as in the report
    assert "1 draws rejected" in table.stdout

    as_json = json.loads(runner.invoke(app, ["pareto", study, "--json"]).stdout)
    assert _names_of(r["trial"] for r in as_json) == FRONTS[objective]
    assert all(r["nearest_named"] == list(CLASSICS)[r["trial"]] and r["itself"] for r in as_json)

    assert runner.invoke(app, ["report", study]).exit_code == 0
    page = (tmp_path / "studies" / study / "report.html").read_text()
    body = page[page.index("<table id='pareto-table'"):]
    body = body[:body.index("</table>")]
    numbers = [int(n) for n in re.findall(r"<tr><td data-v='\d+'>\d+</td><td data-v='(\d+)'>", body)]
    assert _names_of(numbers) == FRONTS[objective]
    assert f"{DRAWN} (itself)" in body
    assert f"<th>objectives</th><td>proxy accuracy / {AXIS_TITLES[objective]}</td>" in page  # no metric names stored
    figures = json.loads(page[page.index('id="figures">') + len('id="figures">'):].split("</script>")[0]
                         .replace("<\\/", "</"))
    front = next(t for t in figures["pareto"]["data"] if t.get("meta") == "front" and t.get("visible") is not False)
    assert len(front["x"]) == len(FRONTS[objective])  # the plot opens on the study's axis too

    assert runner.invoke(app, ["plot", study]).exit_code == 0
    plot = (tmp_path / "studies" / study / "pareto.html").read_text()
    assert f"proxy accuracy against {AXIS_TITLES[objective]}" in plot


def test_records_read_costs_by_name_and_states_by_reason(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = _trial("mobilenet", "params")
    study.add_trial(trial)
    bare = optuna.trial.create_trial(values=[0.5, 1234.0])  # a cost stored only as the objective's value
    study.add_trial(bare)
    study.add_trial(optuna.trial.create_trial(state=States.PRUNED, user_attrs={"replaced": "by trial 9"}))
    first, second, third = study.get_trials()
    record = TrialRecord.of(first, "params")
    assert (record.flops, record.params, record.reference) == (price(named("mobilenet"), 224).flops,
                                                               price(named("mobilenet"), 224).params, "mobilenet")
    assert TrialRecord.of(second, "params").params == 1234 and TrialRecord.of(second, "params").flops is None
    assert TrialRecord.of(second, "flops").flops == 1234  # read as FLOPs only in a FLOPs study
    assert (TrialRecord.of(third).state, TrialRecord.of(third).reason) == ("replaced", "by trial 9")
    assert record.rung == 0 and record.seed_accuracies == () and record.accuracy_std is None
    assert counts(study.get_trials()) == {"complete": 2, "replaced": 1}


def test_the_stored_old_study_reads_through_the_record():
    old = Path(__file__).parent / "data" / "study-bb860fb.db"
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{old}")
    done = [t for t in study.get_trials() if t.state == States.COMPLETE]
    assert done and all(TrialRecord.of(t).flops == t.values[1] for t in done)


def _study_at_epoch_one(objective: str):
    """An in-memory study with one trained trial: fewer params, many more FLOPs, more accurate at epoch 1."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[0.9, 1e6], intermediate_values={1: 0.9},
                                              user_attrs={"flops": 10 ** 10, "params": 10 ** 6}))
    trial = study.ask()
    trial.set_user_attr("flops", 10 ** 9)
    trial.set_user_attr("params", 2 * 10 ** 6)
    settings = Settings(budget=10 ** 10, objective=objective, prune="pareto", prune_k=1)
    ctx = Context(settings, None, settings.proxy.recipe(), "cpu")
    return trial, hooks(ctx)["prune"]


def test_pruning_in_a_params_study_compares_params():
    trial, prune = _study_at_epoch_one("params")
    with pytest.raises(pruning.PrunedAtEpoch):
        prune(trial, 1, 0.5)  # dominated on params: a million fewer and more accurate
    assert trial.user_attrs["pruned_at_epoch"] == 1
    trial, prune = _study_at_epoch_one("flops")
    prune(trial, 1, 0.5)  # on FLOPs the other is ten times dearer: no one dominates it


def test_progress_names_the_best_by_the_objective():
    progress = SearchProgress(4, 0, 0, objective="params")
    study = optuna.create_study(directions=["maximize", "minimize"])
    for flops, params in ((10 ** 9, 5 * 10 ** 6), (10 ** 10, 10 ** 6)):  # equal accuracy: fewer params wins
        study.add_trial(optuna.trial.create_trial(values=[0.8, params], user_attrs={"flops": flops, "params": params}))
        progress.trial_done(study, study.get_trials()[-1])
    assert progress.best == (0.8, 10 ** 6, 1)
    assert "1.00M params" in str(progress._render().renderables[-1])


def test_resolution_range_is_the_same_in_the_error_and_the_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    low, high = RESOLUTIONS
    for command in (["search", "--budget", "1G", "--no-run"], ["show", "resnet50"], ["train", "resnet50", "-o", "x"],
                    ["export", "resnet50", "-f", "onnx", "-o", "x.onnx"], ["graph", "resnet50"]):
        for bad in (low - 1, high + 1):
            run = runner.invoke(app, [*command, "--resolution", str(bad)])
            assert run.exit_code == 2, (command, run.output)
            assert f"{low} to {high}" in run.stderr, (command, run.stderr)
    assert not (tmp_path / "studies").exists()  # nothing made by a refused flag
