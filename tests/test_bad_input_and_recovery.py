"""Bad flags, bad datasets, corrupt trials, interrupted references and written files, as a user meets them.

Every refusal is one line on stderr with exit code 2, never a traceback; nothing stored is overwritten.
"""
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from explorer.base.files import is_storage
from explorer.scaleout import claim as workers

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--space", "mobilenet", "--epochs", "1", "--proxy-resolution", "8", "--batch-size", "128",
         "--proxy-width", "0.05"]
States = optuna.trial.TrialState


def one_line_error(run, *phrases):
    assert run.exit_code == 2, run.output
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.output and "Input should" not in run.stderr, run.stderr
    for phrase in phrases:
        assert phrase in run.stderr, run.stderr


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


# ---------------------------------------------------------------------------- flags

@pytest.mark.parametrize("args,phrases", [
    (["search", "--trials", "0"], ["--trials: must be at least 1"]),
    (["search", "--epochs", "0"], ["--epochs: must be at least 1"]),
    (["search", "--jobs", "0"], ["--jobs: must be at least 1"]),
    (["search", "--budget", "1e400"], ["--budget: '1e400' is out of range"]),
    (["search", "--budget", "2GF", "--max-params", "1e400"], ["--max-params: '1e400' is out of range"]),
    (["search", "--budget", "2GF", "--seed", "-1"], ["--seed: -1 is out of range"]),
    (["search", "--budget", "2GF", "--proxy-width", "inf", "--no-run"], ["--proxy-width: inf is not a finite"]),
    (["search", "--budget", "2GF", "--lr", "nan", "--no-run"], ["--lr: must be"]),
    (["search", "--budget", "2GF", "--trials", "100000000000"], ["--trials", "out of range"]),
    (["search", "--trials", "many"], ["--trials: must be a whole number"]),
    (["show", "resnet50", "--classes", "-3"], ["--classes: -3 is out of range"]),
    (["show", "resnet50", "--classes", "0"], ["--classes: 0 is out of range"]),
    (["show", "resnet50", "-r", "0"], ["--resolution: 0 is out of range"]),
    (["graph", "resnet50", "-r", "-5", "-f", "json"], ["--resolution: -5 is out of range"]),
    (["show", "resnet50", "--colour"], ["No such option: --colour"]),
    (["show"], ["GENOTYPE: is required"]),
    (["export", "s", "--trial", "-1", "-f", "yaml", "-o", "x.yaml"], ["--trial"]),
    (["lesion", "s", "--trial", "1", "--k", "0"], ["--k: must be at least 1"]),
    (["worker", "--study", "s", "--heartbeat", "0"], ["--heartbeat"]),
    (["nosuchcommand"], ["No such command"]),
])
def test_flag_errors_are_one_line(cli, args, phrases):
    one_line_error(cli(*args), *phrases)


def test_no_study_is_created_by_a_refused_flag(cli, tmp_path):
    one_line_error(cli("search", "--budget", "2GF", "--proxy-width", "nan"))
    assert not (tmp_path / "studies").exists()


def test_a_real_process_prints_one_line_for_a_usage_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "cli", "search", "--trials", "0"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0, run.stderr
    assert run.stderr.startswith("error: --trials: must be at least 1"), run.stderr


# ---------------------------------------------------------------------------- genotype files on the command line

def test_genotype_file_errors_begin_with_the_file_name(cli, tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    one_line_error(cli("show", "bin.yaml"), "bin.yaml: isn't UTF-8 text")
    (tmp_path / "shape.yaml").write_text("resolution: 8\nstages: [{blocks: [{branches: [[{op: conv, out: 8, "
                                         "stride: 2}], [{op: conv, out: 8}]]}]}]\nstem: [{op: conv, out: 8, "
                                         "kernel: 7, stride: 4}]\n")
    one_line_error(cli("show", "shape.yaml"), "shape.yaml: stages[0]")
    one_line_error(cli("graph", "shape.yaml", "-f", "json"), "shape.yaml: stages[0]")
    (tmp_path / "deep.yaml").write_text("[" * 200 + "]" * 200)
    one_line_error(cli("show", "deep.yaml"), "deep.yaml: document: nested deeper than")
    (tmp_path / "pad.yaml").write_text("stages: [{blocks: [{branches: [[{op: conv, out: 8, padding: -1}]]}]}]")
    one_line_error(cli("show", "pad.yaml"), "pad.yaml: stages[0].blocks[0].branches[0][0].padding: -1 is out of range")


def test_space_files_get_the_same_checks(cli, tmp_path):
    (tmp_path / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    one_line_error(cli("search", "--budget", "2GF", "--space", "latin.yaml", "--no-run"), "latin.yaml: isn't UTF-8")
    assert not (tmp_path / "studies").exists()


def test_a_space_with_a_bad_later_option_leaves_no_study(cli, tmp_path):
    """Only the first option was checked: the second would have failed at its first trial, in a study."""
    (tmp_path / "later.yaml").write_text("choice: [{space: mobilenet}, 5]\n")
    one_line_error(cli("search", "--budget", "2GF", "--space", "later.yaml", "--no-run"),
                   "later.yaml: choice[1]: a genotype is a mapping", "option 1 of the choice")
    assert not (tmp_path / "studies").exists()


# ---------------------------------------------------------------------------- datasets, before any study exists

def _images(folder: Path, classes: int, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"class{c}" / f"{i}.png")


@pytest.mark.parametrize("make,phrase", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "has no class folders"),
    (lambda p: _images(p, 1, 4), "classification needs at least 2"),
    (lambda p: (_images(p, 2, 2), (p / "class0" / "0.png").write_bytes(b"not a png")), "cannot read image"),
    (lambda p: _images(p, 2, 20), "--batch-size: 128 is more than the"),
])
def test_a_bad_image_folder_leaves_no_study(cli, tmp_path, make, phrase):
    make(tmp_path / "images")
    run = cli("search", "--budget", "1GF", "--dataset", f"imagefolder:{tmp_path / 'images'}", "--study", "x", *QUICK)
    one_line_error(run, phrase)
    assert not (tmp_path / "studies").exists()


# ---------------------------------------------------------------------------- a real study to write from

@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """studies/s: two searched trials on digits, the mobilenet reference first."""
    cwd = tmp_path_factory.mktemp("hardening")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        run = CliRunner().invoke(app, ["search", "--budget", "1GFLOPs", "--trials", "2", "--study", "s", *QUICK])
    assert run.exit_code == 0, run.output
    return cwd


@pytest.fixture
def study_copy(home, tmp_path, monkeypatch):
    """A private copy of the study (tests may corrupt it), with the CLI run from beside it."""
    shutil.copytree(home / "studies", tmp_path / "studies")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return tmp_path, lambda *args: runner.invoke(app, list(args))


def _completed(db: Path):
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    return [t for t in study.get_trials() if t.state == States.COMPLETE]


def test_export_never_overwrites_a_study(study_copy):
    cwd, cli = study_copy
    db = cwd / "studies" / "s" / "study.db"
    before = db.read_bytes()
    number = str(_completed(db)[0].number)
    for force in ([], ["--force"]):
        one_line_error(cli("export", "s", "--trial", number, "-f", "yaml", "-o", str(db), *force),
                       "holds a study's storage; refusing to overwrite it")
    assert db.read_bytes() == before and is_storage(db)
    out = cwd / "g.yaml"
    out.write_text("mine\n")
    one_line_error(cli("export", "s", "--trial", number, "-f", "yaml", "-o", str(out)), "exists; pass --force")
    assert out.read_text() == "mine\n"
    run = cli("export", "s", "--trial", number, "-f", "yaml", "-o", str(out), "--force")
    assert run.exit_code == 0, run.output
    assert "stages" in out.read_text()
    assert not [p for p in cwd.iterdir() if ".partial" in p.name]  # the temporary file was renamed away


def test_other_writers_refuse_existing_files_and_storage(study_copy):
    cwd, cli = study_copy
    db = cwd / "studies" / "s" / "study.db"
    before = db.read_bytes()
    for force in ([], ["--force"]):
        one_line_error(cli("graph", "resnet50", "-f", "json", "-o", str(db), *force), "holds a study's storage")
        one_line_error(cli("plot", "s", "--no-open", "--png", str(db), *force), "holds a study's storage")
    assert db.read_bytes() == before
    out = cwd / "g.json"
    out.write_text("mine")
    one_line_error(cli("graph", "resnet50", "-f", "json", "-o", str(out)), "exists; pass --force")
    assert out.read_text() == "mine"
    assert cli("graph", "resnet50", "-f", "json", "-o", str(out), "--force").exit_code == 0
    assert json.loads(out.read_text())["graph"]["params"] == 25_557_032
    assert cli("report", "s").exit_code == 0 and cli("report", "s").exit_code == 0  # its own page: regenerated


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("fmt", ["yaml", "torchscript", "onnx"])
def test_unwritable_outputs_are_one_line(study_copy, fmt):
    cwd, cli = study_copy
    (cwd / "afile").write_text("x")  # a file where a directory should be: fails for root too
    number = str(_completed(cwd / "studies" / "s" / "study.db")[0].number)
    one_line_error(cli("export", "s", "--trial", number, "-f", fmt, "-o", str(cwd / "afile" / "net.out")),
                   "-o: can't write")
    one_line_error(cli("graph", "resnet50", "-f", "json", "-o", str(cwd / "afile" / "g.json")), "-o: can't write")


def test_a_corrupt_trial_is_skipped_with_a_warning(study_copy):
    cwd, cli = study_copy
    db = cwd / "studies" / "s" / "study.db"
    bad, good = _completed(db)[:2]
    with sqlite3.connect(db) as con:
        con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'genotype'",
                    (json.dumps("{not json"), bad._trial_id))
    for args in (["pareto", "s"], ["report", "s"], ["plot", "s", "--no-open"]):
        run = cli(*args)
        assert run.exit_code == 0, run.output
        assert f"trial {bad.number}'s stored genotype is corrupt" in run.stderr
        assert run.stderr.count("warning:") <= 1 and "Traceback" not in run.output
    one_line_error(cli("export", "s", "--trial", str(bad.number), "-f", "yaml", "-o", "bad.yaml"),
                   f"trial {bad.number}'s stored genotype is corrupt")
    run = cli("export", "s", "--trial", str(good.number), "-f", "json", "-o", "good.json")
    assert run.exit_code == 0 and json.loads((cwd / "good.json").read_text())["stages"]
    run = cli("search", "--study", "s", "--trials", "3")  # resuming trains one more and reports the rest
    assert run.exit_code == 0, run.output
    assert f"trial {bad.number}'s stored genotype is corrupt" in run.stderr and len(_completed(db)) == 3


def test_an_interrupted_reference_is_trained_on_resume(study_copy):
    cwd, cli = study_copy
    run = cli("search", "--budget", "1GFLOPs", "--trials", "1", "--study", "r", "--no-run", *QUICK)
    assert run.exit_code == 0, run.output
    study = optuna.load_study(study_name="r", storage=f"sqlite:///{cwd}/studies/r/study.db")
    queued = [t for t in study.get_trials() if t.state == States.WAITING]
    assert [t.user_attrs.get("reference") for t in queued] == ["mobilenet"]

    def ctrl_c(trial):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):  # the worker's own Ctrl-C path: the trial is failed, not retried
        workers.work(study, ctrl_c, lambda: 1)
    failed = study.get_trials()[0]
    assert failed.state == States.FAIL and failed.user_attrs["fail_reason"] == workers.INTERRUPTED
    assert not [t for t in study.get_trials() if t.state == States.WAITING]
    run = cli("search", "--study", "r")
    assert run.exit_code == 0, run.output
    done = [t for t in study.get_trials() if t.state == States.COMPLETE]
    assert [t.user_attrs.get("reference") for t in done] == ["mobilenet"]
    assert workers.requeue_interrupted_references(study) == []  # once back, never queued twice
