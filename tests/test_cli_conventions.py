"""CLI conventions: --version, shell completion, help panels for search, one --open/--no-open spelling, machine-
readable list and pareto output, and no mid-word wrapping off a terminal."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import space
from cli import app

ROOT = Path(__file__).resolve().parents[1]


def explore(*args, cwd=ROOT, columns="80"):
    """As a user's pipe sees it: stdout is not a terminal."""
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": columns})


def test_version_and_completion():
    run = CliRunner().invoke(app, ["--version"])
    assert run.exit_code == 0 and run.stdout.startswith("explore ")
    help_text = CliRunner().invoke(app, ["--help"]).stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text and "--version" in help_text


def test_search_options_sit_in_help_panels():
    text = CliRunner().invoke(app, ["search", "--help"], terminal_width=200).stdout
    panels = ["Budget and space", "Proxy and training", "Data", "Storage and workers", "Beyond accuracy"]
    at = [text.index(f"─ {p} ") for p in panels]
    assert at == sorted(at)
    for option, panel in (("--budget", 0), ("--epochs", 1), ("--dataset", 2), ("--storage", 3), ("--prune ", 4)):
        assert at[panel] < text.index(option) < (at[panel + 1] if panel + 1 < len(at) else len(text))


@pytest.mark.parametrize("command", ["plot", "report", "edf", "graph", "compare"])
def test_one_open_spelling_on_every_page_command(command):
    text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).stdout
    assert "--open" in text and "--no-open" in text


def test_list_pattern_family_and_json():
    rows = json.loads(explore("list", "*inception*", "--json").stdout)
    assert [r["name"] for r in rows] == space.names("*inception*")
    r = next(r for r in rows if r["name"] == "inception_v3")
    assert r["flops"] == space.complexity("inception_v3").flops and r["flops_unit"] == "multiply-adds"
    assert r["flops_at_224"] == space.complexity("inception_v3", 224).flops
    aux = next(r for r in rows if r["name"] == "inception_v3_aux")
    assert aux["flops_at_224"] is None  # its aux head doesn't fit 224 (the table says "too small")
    dense = explore("list", "--family", "dense")
    names = [line.split()[1] for line in dense.stdout.splitlines() if line.startswith("│")]
    assert names == space.names(family="dense")
    bad = explore("list", "--family", "nope")
    assert bad.returncode == 2 and "--family: unknown family 'nope'; choose one of dense" in bad.stderr
    empty = explore("list", "zzz*")
    assert empty.returncode == 0 and "no named genotype matches 'zzz*'" in empty.stderr


def test_no_mid_word_wrapping_off_a_terminal(tmp_path):
    """A long line stays one line in a pipe, whatever COLUMNS says; tables keep whole cells."""
    run = explore("search", "--budget", "2GFLOPs", "--study", "a-rather-long-study-name-for-wrapping-checks",
                  "--dataset", "digits", "--no-run", cwd=tmp_path, columns="40")
    assert run.returncode == 0, run.stderr
    line = next(l for l in run.stdout.splitlines() if l.startswith("created study"))
    assert "dataset digits" in line and line.rstrip().endswith("trials done")
    listed = explore("list", columns="40").stdout
    assert any("inception_resnet_v2" in l and "inception-resnet" in l for l in listed.splitlines())


@pytest.fixture(scope="module")
def study_home(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("conventions")
    run = explore("search", "--budget", "1GFLOPs", "--trials", "2", "--study", "p", "--space", "mobilenet",
                  "--dataset", "digits", "--epochs", "1", "--proxy-resolution", "8", "--batch-size", "128",
                  "--proxy-width", "0.05", cwd=cwd)
    assert run.returncode == 0, run.stderr
    return cwd


def test_pareto_json_and_csv_agree_with_the_table(study_home):
    rows = json.loads(explore("pareto", "p", "--json", cwd=study_home).stdout)
    assert rows and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all({"trial", "family", "flops", "params", "accuracy", "nearest_named"} <= set(r) for r in rows)
    assert [r["accuracy"] for r in rows] == sorted((r["accuracy"] for r in rows), reverse=True)
    table = explore("pareto", "p", cwd=study_home).stdout
    assert all(f"{r['accuracy']:.4f}" in table for r in rows)
    parsed = list(csv.DictReader(io.StringIO(explore("pareto", "p", "--csv", cwd=study_home).stdout)))
    assert [int(r["trial"]) for r in parsed] == [r["trial"] for r in rows]
    assert [int(r["flops"]) for r in parsed] == [r["flops"] for r in rows]
    both = explore("pareto", "p", "--json", "--csv", cwd=study_home)
    assert both.returncode == 2 and "--json and --csv: pick one" in both.stderr
