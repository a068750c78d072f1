"""The read-only commands as a user runs them: list, show, graph."""
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx

import space
from space.named import named, names

ROOT = Path(__file__).resolve().parents[1]


def explore(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_readme_python_one_liner():
    """`from space import named, build` must give the function, not the `space.named` subpackage."""
    code = "from space import named, build; m = build(named('xception')); print(m)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "Network(" in run.stdout and "stages" in run.stdout


def test_list_prints_every_name_with_params_and_flops():
    run = explore("list")
    assert run.returncode == 0, run.stderr
    assert "multiply-adds" in run.stdout
    for name in names():
        line = next(l for l in run.stdout.splitlines() if f" {name} " in l)
        g = named(name)
        assert f"{space.complexity(g).params:,}" in line
        assert f"{space.complexity(g).flops / 1e9:.3f}" in line


def test_show_table_follows_resolution():
    run = explore("show", "resnet50", "--resolution", "32")
    assert run.returncode == 0
    assert "32x32" in run.stdout and "4x4" in run.stdout and "multiply-adds" in run.stdout
    assert f"{space.complexity(named('resnet50'), 32).flops / 1e6:,.1f}" in run.stdout


def test_graph_exports(tmp_path):
    run = explore("graph", "googlenet", "-f", "graphml", "-o", str(tmp_path / "g.graphml"))
    assert run.returncode == 0, run.stderr
    graph = nx.read_graphml(tmp_path / "g.graphml")
    assert sum(d["flops"] for _, d in graph.nodes(data=True)) == space.complexity(named("googlenet")).flops
    data = json.loads(explore("graph", "resnet50", "-f", "json").stdout)
    assert data["graph"]["params"] == 25_557_032
    assert explore("graph", "resnet50", "-f", "dot").stdout.startswith("digraph")
    assert explore("graph", "mobilenet", cwd=tmp_path).returncode == 0
    page = (tmp_path / "mobilenet-graph.html").read_text()
    assert "plotly" in page and "cdn.plot.ly" not in page
    bad = explore("graph", "resnet50", "-f", "svg")
    assert bad.returncode == 2 and "--format" in bad.stderr and "Traceback" not in bad.stderr


def test_resolution_too_small_names_the_stage():
    run = explore("show", "resnet50", "-r", "8")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and "stages[" in run.stderr and "vanishes at input resolution 8" in run.stderr
