"""`explore search` end to end on the embedded digits data: budget, seeding, resume, refusal, failures."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import space
from explorer.base.budget import parse_count, parse_flops
from explorer.base.errors import UserError
from explorer.base.settings import PROXY
from explorer.commands import runner
from explorer.sweep import objective as search
from explorer.trial.trainer import Diverged

ROOT = Path(__file__).resolve().parents[1]
# Small and quick: mobilenet proxies at 8 px, two epochs.
QUICK = ["--dataset", "digits", "--space", "mobilenet", "--epochs", "2", "--proxy-resolution", "8", "--batch-size", "128",
         "--proxy-width", "0.05"]


def explore(*args, cwd, check=True, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True,
                         env=env, timeout=300, **kw)
    if check:
        assert run.returncode == 0, run.stderr + run.stdout
    return run


def trials_of(cwd, study):
    storage = f"sqlite:///{cwd}/studies/{study}/study.db"
    return optuna.load_study(study_name=study, storage=storage).get_trials()


@pytest.mark.parametrize("text,value", [("2GFLOPs", 2e9), ("2GF", 2e9), ("600MFLOPs", 6e8), ("2e9", 2e9),
                                        ("1.5 GFLOPs", 1.5e9), ("600M", 6e8), ("350MMACs", 3.5e8)])
def test_budget_forms(text, value):
    assert parse_flops(text) == int(value)


@pytest.mark.parametrize("text", ["2GB", "two", "2 GFLOP/s", "-1GF", "0", ""])
def test_bad_budgets_name_the_accepted_forms(text):
    with pytest.raises(UserError, match="--budget.*2GFLOPs, 2GF, 600MFLOPs"):
        parse_flops(text)


def test_param_caps():
    assert parse_count("5M") == 5_000_000 and parse_count("500k") == 500_000
    with pytest.raises(UserError, match="--max-params"):
        parse_count("5MB")


def test_budget_is_enforced_before_training(tmp_path):
    run = explore("search", "--budget", "60MFLOPs", "--max-params", "2M", "--trials", "3", "--study", "tight",
                  *QUICK, cwd=tmp_path)
    trials = trials_of(tmp_path, "tight")
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    rejected = [t for t in trials if "rejected" in t.user_attrs]
    assert len(done) == 3
    assert rejected, "a 60 MFLOPs budget must reject some draws of the MobileNet space"
    for t in done:
        assert t.values[1] <= 60e6 and t.user_attrs["flops"] <= 60e6 and t.user_attrs["params"] <= 2e6
        g = space.load(json.loads(t.user_attrs["genotype"]))  # the stored genotype is the priced one
        assert space.complexity(g, 224, 1000).flops == t.user_attrs["flops"]
        assert "wall_time" in t.user_attrs and t.user_attrs["dataset"] == "digits"
        assert t.intermediate_values and max(t.intermediate_values) == 2  # accuracy per epoch
    for t in rejected:
        assert t.state == optuna.trial.TrialState.PRUNED and "accuracy" not in t.user_attrs
    assert f"{len(rejected)} draws rejected" in run.stdout
    assert re.search(rf"^3 completed, {len(rejected)} draws rejected", run.stdout, re.M), \
        "the report starts on its own line, after the live view"
    assert (tmp_path / "studies" / "tight" / "pareto.html").exists()


def test_classics_are_enqueued_first(tmp_path):
    explore("search", "--budget", "1GFLOPs", "--trials", "1", "--study", "ref", *QUICK, cwd=tmp_path)
    first = trials_of(tmp_path, "ref")[0]
    assert first.user_attrs["reference"] == "mobilenet"
    assert first.user_attrs["digest"] == space.digest(space.named("mobilenet"))


def test_same_seed_same_genotypes(tmp_path):
    digests = []
    for study in ("a", "b"):
        explore("search", "--budget", "2GFLOPs", "--trials", "2", "--study", study, "--seed", "7", *QUICK, cwd=tmp_path)
        digests.append([t.user_attrs.get("digest") for t in trials_of(tmp_path, study)])
    assert digests[0] == digests[1]
    explore("search", "--budget", "2GFLOPs", "--trials", "2", "--study", "c", "--seed", "8", *QUICK, cwd=tmp_path)
    assert [t.user_attrs.get("digest") for t in trials_of(tmp_path, "c")] != digests[0]


def test_resume_and_refusal(tmp_path):
    explore("search", "--budget", "2GFLOPs", "--trials", "2", "--study", "r", *QUICK, cwd=tmp_path)
    before = [(t.number, t.values) for t in trials_of(tmp_path, "r") if t.values]
    run = explore("search", "--budget", "2GFLOPs", "--trials", "3", "--study", "r", *QUICK, cwd=tmp_path)
    assert "resuming" in run.stdout
    after = [(t.number, t.values) for t in trials_of(tmp_path, "r") if t.values]
    assert after[:2] == before and len(after) == 3
    # the settings are read from the study: naming it is enough
    assert "3/3 trials done" in explore("search", "--study", "r", cwd=tmp_path).stdout
    for flags, field in ((["--dataset", "mnist"], "dataset"), (["--budget", "1GFLOPs"], "budget"),
                         (["--resolution", "160"], "resolution"), (["--space", "residual"], "space")):
        run = explore("search", "--study", "r", *flags, cwd=tmp_path, check=False)
        assert run.returncode == 2 and field in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert "to resume it, run `explore search --study r`" in run.stderr
    assert len([t for t in trials_of(tmp_path, "r") if t.values]) == 3


def test_a_diverging_trial_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real_train = search.train

    def nan_on_trial_one(model, data, recipe, device, on_epoch=None, **options):
        if not hasattr(nan_on_trial_one, "called"):
            nan_on_trial_one.called = True
            raise Diverged("loss is nan at epoch 1")
        return real_train(model, data, recipe, device, on_epoch, **options)

    monkeypatch.setattr(search, "train", nan_on_trial_one)
    explicit = dict(budget="2GFLOPs", dataset="digits", space="mobilenet", trials=2, epochs=1, proxy_resolution=8, proxy_width=0.05)
    runner.search_command(explicit, "nan", None, "cpu", None, False, runner.Console(file=open(os.devnull, "w")))
    trials = trials_of(tmp_path, "nan")
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith("diverged: loss is nan")
    assert len([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]) == 2


def test_an_error_outside_training_fails_that_trial_and_the_study_goes_on(tmp_path, monkeypatch):
    """A bug met while recording a draw (here: its attributes) is the trial's failure, not the study's end."""
    monkeypatch.chdir(tmp_path)
    real_attrs = search.trial_attrs

    def broken_once(*args):
        if not hasattr(broken_once, "called"):
            broken_once.called = True
            raise KeyError("depth")
        return real_attrs(*args)

    monkeypatch.setattr(search, "trial_attrs", broken_once)
    explicit = dict(budget="2GFLOPs", dataset="digits", space="mobilenet", trials=2, epochs=1, proxy_resolution=8, proxy_width=0.05)
    runner.search_command(explicit, "bug", None, "cpu", None, False, runner.Console(file=open(os.devnull, "w")))
    trials = trials_of(tmp_path, "bug")
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "KeyError: 'depth'"
    assert "broken_once" in failed[0].user_attrs["traceback"]
    assert len([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]) == 2


def test_persistent_divergence_stops_with_a_clear_message(tmp_path):
    run = explore("search", "--budget", "2GFLOPs", "--trials", "3", "--study", "lr", "--lr", "1e9", *QUICK,
                  cwd=tmp_path, check=False)
    assert run.returncode == 2 and "in a row failed" in run.stderr and "Traceback" not in run.stderr
    reasons = [t.user_attrs.get("fail_reason", "") for t in trials_of(tmp_path, "lr")]
    assert sum(r.startswith("diverged") for r in reasons) == search.MAX_FAILURES_IN_A_ROW


def test_ctrl_c_marks_the_trial_and_the_next_run_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "search", "--budget", "2GFLOPs", "--trials", "2",
                             "--study", "int", "--dataset", "digits", "--space", "mobilenet", "--epochs", "40", "--proxy-resolution", "8",
                             "--proxy-width", "0.05"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "studies" / "int" / "study.db"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        if db.exists():
            with sqlite3.connect(db) as con:
                try:
                    if con.execute("select count(*) from trial_intermediate_values").fetchone()[0]:
                        break  # a trial is running and has reported an epoch
                except sqlite3.OperationalError:
                    pass
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume" in out and "Traceback" not in err
    states = [t.state for t in trials_of(tmp_path, "int")]
    assert states == [optuna.trial.TrialState.FAIL]
    explore("search", "--study", "int", cwd=tmp_path)  # the same study, its stored settings
    states = [t.state for t in trials_of(tmp_path, "int")]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2 and states[0] == optuna.trial.TrialState.FAIL


def test_corrupt_and_foreign_storage_are_refused_and_untouched(tmp_path):
    garbage = tmp_path / "studies" / "bad" / "study.db"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a database at all" * 10)
    run = explore("search", "--budget", "2GFLOPs", "--study", "bad", *QUICK, cwd=tmp_path, check=False)
    assert run.returncode == 2 and "not an SQLite database" in run.stderr
    assert garbage.read_bytes() == b"not a database at all" * 10
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as con:
        con.execute("create table invoices (id integer)")
    before = foreign.read_bytes()
    run = explore("search", "--budget", "2GFLOPs", "--study", "f", "--storage", f"sqlite:///{foreign}", *QUICK,
                  cwd=tmp_path, check=False)
    assert run.returncode == 2 and "not an Optuna study" in run.stderr
    assert foreign.read_bytes() == before


@pytest.mark.parametrize("flags,phrase", [
    (["--budget", "2GB"], "--budget"),
    (["--budget", "2GFLOPs", "--space", "nonesuch"], "space"),
    (["--budget", "2GFLOPs", "--dataset", "imagenet"], "--dataset"),
    (["--budget", "2GFLOPs", "--sampler", "cmaes"], "--sampler"),
    (["--budget", "2GFLOPs", "--max-params", "lots"], "--max-params"),
    ([], "--budget"),
])
def test_bad_flags_are_one_line_errors(tmp_path, flags, phrase):
    run = explore("search", *flags, cwd=tmp_path, check=False)
    assert run.returncode == 2 and phrase in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "studies").exists(), "a refused search leaves no study behind"


def test_unreadable_space_file(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("stages: [1, 2\n  - x: :")
    run = explore("search", "--budget", "2GFLOPs", "--space", str(bad), cwd=tmp_path, check=False)
    assert run.returncode == 2 and "space.yaml" in run.stderr and "not valid YAML" in run.stderr


# --------------------------------------------------------------------------- the default dataset

@pytest.fixture
def no_fashion_mnist(tmp_path, monkeypatch):
    """Fashion-MNIST can't be had: no package, an empty cache, and downloads refused at once."""
    import dataclasses
    import socket

    from explorer.trial import data
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setitem(data.SOURCES, "fashion-mnist", tuple(
        dataclasses.replace(s, url=f"http://127.0.0.1:{port}/{s.filename}") for s in data.SOURCES["fashion-mnist"]))
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", (tmp_path / "no-package",))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def test_default_search_falls_back_to_digits_and_names_it(no_fashion_mnist, capsys):
    console = runner.Console(width=100)
    runner.search_command({"budget": "2GFLOPs", "space": "mobilenet"}, None, None, "cpu", no_fashion_mnist, True,
                          console)
    printed = capsys.readouterr().out
    notice = [line for line in printed.splitlines() if line.startswith("note:")]
    assert len(notice) == 1 and "embedded digits" in notice[0] and "apt-get install dataset-fashion-mnist" in notice[0]
    stored = optuna.load_study(study_name="mobilenet-2GFLOPs-digits",
                               storage="sqlite:///studies/mobilenet-2GFLOPs-digits/study.db")
    assert json.loads(stored.user_attrs["explore:settings"])["dataset"] == "digits"


def test_an_explicit_dataset_never_falls_back(no_fashion_mnist):
    from typer.testing import CliRunner

    from cli import app
    run = CliRunner().invoke(app, ["search", "--budget", "2GFLOPs", "--dataset", "fashion-mnist", "--data-dir",
                                   str(no_fashion_mnist), "--no-run"])
    assert run.exit_code == 2, run.output
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and "could not download train-images-idx3-ubyte.gz" in lines[0]
    assert not Path("studies").exists(), "no study is created for data that can't be had"


def test_default_search_uses_fashion_mnist(fashion_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    console = runner.Console(width=100, file=open(os.devnull, "w"))
    runner.search_command({"budget": "2GFLOPs", "space": "mobilenet"}, None, None, "cpu", tmp_path, True, console)
    stored = optuna.load_study(study_name="mobilenet-2GFLOPs-fashion-mnist",
                               storage="sqlite:///studies/mobilenet-2GFLOPs-fashion-mnist/study.db")
    settings = json.loads(stored.user_attrs["explore:settings"])
    assert settings["dataset"] == "fashion-mnist" and settings["train_images"] == PROXY.train_images
    assert settings["proxy_resolution"] == PROXY.resolution
