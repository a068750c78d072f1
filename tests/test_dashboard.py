"""optuna-dashboard reads explore's studies cleanly: compact settings (the space document stored apart), short
parameter names with one every trial has first, design axes as user attrs; and studies made before these changes
(settings with the document inline, parameters named by document paths) still resume and report."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import asdict
from pathlib import Path

import optuna
import pytest

from explorer.base.settings import Recipe, Settings
from explorer.studies.store import METRICS, SETTINGS_KEY, SPACE_KEY, settings_of
from explorer.sweep.study import reference_points, resolve_space
from space.axes import design_axes
from space.named import named, names
from space.sampling import load_space, sample

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--dataset", "digits", "--epochs", "1", "--proxy-resolution", "8", "--batch-size", "128",
         "--proxy-width", "0.05"]
AXES = {"family", "depth", "width", "cardinality", "growth", "kernels", "separable", "residual"}


def explore(*args, cwd):
    run = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr + run.stdout
    return run


def db(cwd: Path, name: str) -> str:
    return f"sqlite:///{cwd}/studies/{name}/study.db"


@pytest.fixture(scope="module")
def union(tmp_path_factory):
    """A union-space study with two searched trials."""
    cwd = tmp_path_factory.mktemp("dashboard")
    explore("search", "--budget", "1GFLOPs", "--trials", "2", "--study", "u", "--sampler", "random", *QUICK, cwd=cwd)
    return cwd


def test_settings_are_compact_and_resume_gets_the_whole_space(union):
    study = optuna.load_study(study_name="u", storage=db(union, "u"))
    text = study.user_attrs[SETTINGS_KEY]
    assert len(text) < 1000 and "choice" not in text  # the ~34 KB space document is not in it
    settings = settings_of(study)
    assert settings.space_doc == load_space("union") and settings.short_names
    stored = study._storage.get_study_system_attrs(study._study_id)
    assert json.loads(stored[SPACE_KEY + settings.space_digest]) == load_space("union")


def test_trials_carry_short_names_and_design_axes(union):
    study = optuna.load_study(study_name="u", storage=db(union, "u"))
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2
    for t in done:
        assert AXES <= set(t.user_attrs)
        assert t.params["arch"] == t.user_attrs["family"]
        assert all(len(name) <= 42 and "[" not in name and "family=" not in name for name in t.params)
        drawn = sample(load_space("union"), optuna.trial.FixedTrial(t.params), short=True)
        assert drawn.family == t.user_attrs["family"]
    names = sorted({n for t in study.trials for n in t.params})
    assert names[0] == "arch"  # sorts first, and every trial has it: the dashboard's default slice plot


@pytest.fixture
def dashboard(union):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("optuna-dashboard")
    assert exe, "optuna-dashboard is in the test extra: pip install -e '.[test]'"
    proc = subprocess.Popen([exe, db(union, "u"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/studies", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_optuna_dashboard_lists_metric_names_and_design_attributes(dashboard):
    studies = get(f"{dashboard}/api/studies")["study_summaries"]
    [summary] = [s for s in studies if s["study_name"] == "u"]
    detail = get(f"{dashboard}/api/studies/{summary['study_id']}")
    assert detail["objective_names"] == METRICS == ["proxy accuracy", "FLOPs (multiply-adds)"]
    assert AXES <= {a["key"] for a in detail["union_user_attrs"]}
    done = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(done) == 2
    for t in done:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert AXES <= set(attrs) and int(attrs["depth"]) > 0 and int(attrs["width"]) > 0
        assert "arch" in {p["name"] for p in t["params"]}
    assert detail["union_search_space"][0]["name"] == "arch"  # the slice plot's default parameter
    shown = sum(len(a["key"]) + len(a["value"]) for a in detail["user_attrs"])
    assert shown < 1500  # the study page's attributes table stays a few lines


# ---------------------------------------------------------------------------- studies made before

def make_old_study(cwd: Path, name: str) -> Settings:
    """A study as the code before this change stored it, written through Optuna's public API: the settings JSON
    with the space document inline and no `short_names`, and the classic enqueued under document-path names."""
    doc, digest = resolve_space("mobilenet")
    settings = Settings(space="mobilenet", space_doc=doc, space_digest=digest, budget=10 ** 9, dataset="digits",
                        proxy_resolution=8, proxy_width=0.05, recipe=Recipe(epochs=1, batch_size=128).to_dict(),
                        trials=1, short_names=False)
    old = asdict(settings)
    del old["short_names"]
    (cwd / "studies" / name).mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=db(cwd, name), directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(METRICS)
    study.set_user_attr(SETTINGS_KEY, json.dumps(old, sort_keys=True))
    for classic, params in reference_points(settings):
        study.enqueue_trial(params, user_attrs={"reference": classic})
    return settings


def test_a_study_made_before_still_resumes_and_reports(tmp_path):
    settings = make_old_study(tmp_path, "old")
    study = optuna.load_study(study_name="old", storage=db(tmp_path, "old"))
    assert settings_of(study).space_doc == settings.space_doc and not settings_of(study).short_names
    enqueued = study.trials[0].params or study.trials[0].system_attrs["fixed_params"]
    assert "stages[0].blocks[0].repeat" in enqueued  # the old names
    explore("search", "--study", "old", "--trials", "2", cwd=tmp_path)  # resume: every setting from the study
    study = optuna.load_study(study_name="old", storage=db(tmp_path, "old"))
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2 and all("stages[0].blocks[0].repeat" in t.params for t in done)  # names stay consistent
    assert not settings_of(study).short_names and settings_of(study).space_doc == settings.space_doc
    assert len(study.user_attrs[SETTINGS_KEY]) < 1000  # rewritten compactly when the target changed
    rows = json.loads(explore("pareto", "old", "--json", cwd=tmp_path).stdout)
    assert rows and {"trial", "flops", "params", "accuracy", "nearest_named"} <= set(rows[0])
    explore("report", "old", cwd=tmp_path)
    page = (tmp_path / "studies" / "old" / "report.html").read_text()
    assert "document paths (made before short names)" in page and "stochastic depth</th><td>off" in page


def test_a_changed_setting_is_named_in_one_short_line(tmp_path):
    make_old_study(tmp_path, "old")
    run = subprocess.run([sys.executable, "-m", "cli", "search", "--study", "old", "--epochs", "3", "--lr", "0.2"],
                         cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 2
    assert "(stored → asked: epochs 1 → 3; lr 0.1 → 0.2)" in run.stderr
    assert "batch_size" not in run.stderr and "{" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", names())
def test_design_axes_of_every_named_genotype(name):
    """Every classic, depthwise (ConvNeXt, InceptionNeXt) and grouped (ResNeXt) ones included, has its axes."""
    axes = design_axes(named(name))
    assert axes["family"] == named(name).family and axes["depth"] > 0 and axes["width"] > 0
    assert isinstance(axes["cardinality"], int) and axes["cardinality"] >= 1
    if name.startswith(("convnext", "inception_next", "mobilenet", "xception")):
        assert axes["separable"]
    if name == "resnext50_32x4d":
        assert axes["cardinality"] == 32 and not axes["separable"]
