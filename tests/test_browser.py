"""The report and the plot in a real browser: headless Chromium driven by Playwright.

Chromium is Debian's (`/usr/bin/chromium`; installed here with apt-get when absent and we are root);
Playwright only drives it, it never downloads a browser. Without either the tests skip with the
reason, except on CI (CI=true), where they must run. Screenshots go to test-artifacts/.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from explorer.analysis import pareto

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
QUICK = ["--dataset", "digits", "--space", "mobilenet", "--epochs", "1", "--proxy-resolution", "8", "--batch-size", "128",
         "--proxy-width", "0.05"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ON_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str):
    if ON_CI:
        pytest.fail(f"{reason} (CI=true: browser tests may not skip)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium() -> str | None:
    """apt-get install chromium, when we are root on a Debian-like system."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=True)
        except (subprocess.SubprocessError, OSError):
            return None
    return find_chromium()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    chromium = find_chromium() or install_chromium()
    if not chromium:
        unavailable("no Chromium found, and `apt-get install chromium` was not possible here")
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        # launch_persistent_context: a fresh --user-data-dir (plain launch() refuses that flag)
        context = p.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=[f for f in FLAGS if f != "--headless"],
            viewport={"width": 1280, "height": 900})
        yield context
        context.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A tiny real study (5 trials and a failure), its report and its plot, made by the project's own commands."""
    from typer.testing import CliRunner

    from cli import app
    cwd = tmp_path_factory.mktemp("browser")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "cli", "search", "--budget", "1GFLOPs", "--trials", "5", "--study", "b",
                          *QUICK], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    study_of(cwd).add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, user_attrs={"family": "mobilenet", "fail_reason": "diverged: loss is nan"}))
    with pytest.MonkeyPatch.context() as mp:  # in-process: no second start-up
        mp.chdir(cwd)
        for args in (["report", "b", "--by", "family", "--by", "width"], ["plot", "b", "--no-open"]):
            run = CliRunner().invoke(app, args)
            assert run.exit_code == 0, run.output
    return cwd


def open_page(browser, path: Path):
    """The page loaded from a file, with every console error, page error and network request recorded."""
    page = browser.new_page()
    seen = {"errors": [], "requests": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_function("() => window.Plotly && document.querySelector('.js-plotly-plot')")
    return page, seen


def study_of(home):
    return optuna.load_study(study_name="b", storage=f"sqlite:///{home}/studies/b/study.db")


def marker_count(page, selector: str) -> int:
    return page.evaluate(f"""() => document.querySelector({selector!r}).data
        .filter(t => t.meta === 'trials').reduce((n, t) => n + t.x.length, 0)""")


def test_report_renders_without_errors(browser, home):
    page, seen = open_page(browser, home / "studies" / "b" / "report.html")
    study = study_of(home)
    n_completed = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    assert marker_count(page, "#pareto") == n_completed
    assert page.locator("#pareto .main-svg").count() >= 1, "plotly drew the Pareto plot"
    for fid in ("hypervolume", "timeline", "edf-family", "edf-width-norm"):
        assert page.evaluate(f"() => document.getElementById({fid!r}).data.length") > 0, fid

    front = pareto.front(pareto.points(study))
    rows = page.locator("#pareto-table tbody tr")
    assert rows.count() == len(front)
    numbers = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(rows.count())]
    assert sorted(numbers) == sorted(p.number for p in front)

    # sorting: accuracy ascending, then descending
    accuracy = page.locator("#pareto-table thead th", has_text="accuracy")
    accuracy.click()
    acc = [float(rows.nth(i).locator("td").nth(5).inner_text().split(" ± ")[0]) for i in range(rows.count())]
    assert acc == sorted(acc)
    accuracy.click()
    acc = [float(rows.nth(i).locator("td").nth(5).inner_text().split(" ± ")[0]) for i in range(rows.count())]
    assert acc == sorted(acc, reverse=True)

    # a network graph is drawn when its <details> opens
    first = page.locator("details.graph").first
    fid = first.get_attribute("data-fig")
    first.locator("summary").first.click()
    page.wait_for_function(f"() => document.getElementById({fid!r}).data")
    assert page.evaluate(f"() => document.getElementById({fid!r}).data.length") > 0

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    assert page.locator("#failed-table", has_text="diverged: loss is nan").count() == 1
    assert seen["errors"] == [], seen["errors"]
    assert all(u.startswith("file:") for u in seen["requests"]), seen["requests"]  # nothing from the network
    page.close()


def test_plot_switches_to_params(browser, home):
    page, seen = open_page(browser, home / "studies" / "b" / "pareto.html")
    sel = ".js-plotly-plot"
    assert marker_count(page, sel) == len(study_of(home).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    title = "() => document.querySelector('.js-plotly-plot').layout.xaxis.title.text"
    assert "FLOPs (multiply-adds)" in page.evaluate(title)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "pareto.png"))
    page.locator(".updatemenu-button", has_text="parameters").click()
    page.wait_for_function(f"() => ({title})().startsWith('parameters')")
    visible = page.evaluate("""() => document.querySelector('.js-plotly-plot').data
        .filter(t => t.meta === 'front').map(t => t.visible)""")
    assert visible == [False, True]
    assert marker_count(page, sel) == len(study_of(home).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    page.screenshot(path=str(ARTIFACTS / "pareto-params.png"))
    assert seen["errors"] == [], seen["errors"]
    assert all(u.startswith("file:") for u in seen["requests"]), seen["requests"]
    page.close()


def test_plot_png_is_the_rendered_plot(browser, home):
    """`explore plot --png`: plotly's exporter (kaleido) renders the plot in the same Chromium."""
    from PIL import Image
    from typer.testing import CliRunner

    from cli import app
    png = home / "images" / "pareto.png"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        run = CliRunner().invoke(app, ["plot", "b", "--no-open", "--png", str(png)])
    assert run.exit_code == 0, run.output
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1200, 620)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 100, "a drawn plot, not a blank page"



def test_network_graph_page_is_layered(browser, tmp_path):
    """`explore graph xception -f html`: the layered layout draws the main path as one column with each residual
    bypass in the column beside it (no detours to a far column, no zig-zag), in a real browser, screenshot kept."""
    from typer.testing import CliRunner

    from cli import app
    path = tmp_path / "xception-graph.html"
    run = CliRunner().invoke(app, ["graph", "xception", "-f", "html", "-o", str(path), "--no-open"])
    assert run.exit_code == 0, run.output
    page, seen = open_page(browser, path)
    traces = page.evaluate("""() => document.querySelector('.js-plotly-plot').data
        .map(t => ({name: t.name, x: t.x, y: t.y, mode: t.mode, text: t.text}))""")
    nodes = [(x, y, label) for t in traces if "markers" in t["mode"] for x, y, label in zip(t["x"], t["y"], t["text"])]
    main = [x for x, _, label in nodes if not label.startswith(("conv 1x1/2", "bn"))
            or x == 0]  # everything but the strided projection shortcuts
    assert set(main) == {0}, "the main path is one straight column"
    shortcut_x = [x for t in traces if t["name"] == "shortcut edge" for x in t["x"] if x is not None]
    assert shortcut_x and set(shortcut_x) <= {0, 1}, "each bypass runs in the column right beside the main path"
    layers = {}
    for x, y, _ in nodes:
        layers.setdefault(y, []).append(x)
    assert all(len(xs) == len(set(xs)) for xs in layers.values()), "no two ops drawn on top of each other"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "graph-xception.png"))
    assert seen["errors"] == [], seen["errors"]
    assert all(u.startswith("file:") for u in seen["requests"]), seen["requests"]
    page.close()
