"""The code's shape, kept: lint, the import contracts in pyproject.toml (README "How the code is laid
out"), and the size limits of the developer guide."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400  # explorer/
MAX_FUNCTION_LINES = 60


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    # a virtual environment made inside the clone, by any name (`python -m venv env`), is not the project's code
    venvs = ",".join(str(cfg.parent.relative_to(ROOT)) for cfg in ROOT.glob("*/pyvenv.cfg"))
    result = run("ruff", "check", "--no-cache", *([f"--extend-exclude={venvs}"] if venvs else []), ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept():
    result = subprocess.run(["lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_no_module_of_explorer_runs_long():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "explorer").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long


def test_no_function_runs_long():
    long = []
    for path in [ROOT / "cli.py", *(ROOT / "explorer").rglob("*.py"), *(ROOT / "space").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long
