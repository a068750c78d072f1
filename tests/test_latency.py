"""Latency as a budget (explorer/trial/latency): the lookup table's key and cache file, time budgets,
a device mismatch refused on resume, and a tiny network's prediction against its measurement.
No timing is asserted beyond a generous factor: accuracy figures belong to benchmarks/latency.py."""
import dataclasses
import json
import math
from dataclasses import asdict

import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_search import QUICK, explore

import space
from explorer.base.budget import is_time, parse_budget, parse_ms
from explorer.base.errors import UserError
from explorer.base.settings import Settings
from explorer.studies.store import settings_of, store_settings
from explorer.trial.candidate import deploy_key, fit_latency_model
from explorer.trial.latency import DeviceKey, Table, calibrate, key_here, measure, model, predict, table_file
from explorer.trial.latency.model import kind
from explorer.trial.latency.trace import MAX_COPIES, distinct, trace


def tiny(out: int, skip: str | None = None, merge: str = "concat", branches: int = 1) -> dict:
    block = {"branches": [[{"op": "conv", "out": out}] for _ in range(branches)], "merge": merge}
    if skip:
        block["skip"] = skip
    return {"name": f"tiny{out}", "stem": [{"op": "conv", "out": 8, "stride": 2}],
            "stages": [{"blocks": [{"repeat": 2, **block}]}]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "explore" / "latency"


def test_the_key_names_device_torch_threads_dtype_and_batch(cache):
    key = key_here("cpu", threads=1)
    assert table_file(key).parent == cache and table_file(key) == table_file(key_here("cpu", threads=1))
    assert key.torch == torch.__version__ and key.dtype == "float32" and key.batch == 1 and key.name
    others = [key_here("cpu", threads=2), key_here("cpu", threads=1, batch=8),
              key_here("cpu", threads=1, dtype="bfloat16"),
              DeviceKey(**{**vars(key), "torch": "0.0.1"}), DeviceKey(**{**vars(key), "name": "another CPU"}),
              DeviceKey(**{**vars(key), "method": key.method + 1})]
    assert len({table_file(k) for k in [key, *others]}) == 1 + len(others)


def test_ops_are_measured_once_and_cached(cache):
    key = key_here("cpu", threads=1)
    ops = trace(tiny(8), 16)
    table = Table(key)
    assert table.measure(ops) == len(distinct(ops)[0]) > 0
    assert table.measure(ops) == 0  # nothing new
    again = Table(key)
    assert again.ops == table.ops and all(v > 0 for v in again.ops.values())
    assert json.loads(table_file(key).read_text())["key"]["threads"] == 1


def test_a_stale_or_corrupt_table_is_rebuilt(cache):
    key = key_here("cpu", threads=1)
    table = Table(key)
    table.measure(trace(tiny(8), 16))
    data = json.loads(table_file(key).read_text())
    data["key"]["torch"] = "0.0.1"  # as if written by another torch under the same name
    table_file(key).write_text(json.dumps(data))
    assert Table(key).ops == {}
    table_file(key).write_text("{ half a file")
    stale = Table(key)
    assert stale.ops == {} and stale.measure(trace(tiny(8), 16)) > 0
    assert json.loads(table_file(key).read_text())["key"]["torch"] == torch.__version__


def test_the_trace_counts_adds_concats_and_pools():
    def names(g):
        return {op.key.split("(")[0] for op in trace(g, 32)}
    assert "Tensor.add" in names(tiny(8, skip="residual"))
    assert "cat" in names(tiny(8, branches=2))
    resnet = trace("resnet50", 224)
    assert sum(op.key.startswith("conv2d") for op in resnet) == 53
    assert {"max_pool2d", "adaptive_avg_pool2d", "linear"} <= {op.key.split("(")[0] for op in resnet}
    assert {kind(op) for op in trace("mobilenet", 224)} == {"conv", "grouped", "memory"}


def test_an_op_is_timed_on_copies_of_all_its_tensors_that_fill_the_cold_bytes():
    """Inputs cycle through copies as weights do (so a large op reads them from memory, as in a network),
    as many as fill the cold bytes; a small op stops at MAX_COPIES."""
    seen = []
    add = next(op for op in trace(space.load(tiny(16, skip="residual")), 32) if op.key.startswith("Tensor.add"))
    spy = dataclasses.replace(add, func=lambda *args, **kwargs: seen.append([a.data_ptr() for a in args]))
    nbytes = sum(a.bytes() for a in add.args)
    for cold, copies in ((0, 1), (3 * nbytes, 3), (10**12, MAX_COPIES)):
        seen.clear()
        call = spy.bind(torch.device("cpu"), cold)
        for _ in range(2 * copies):
            call()
        assert len({tuple(ptrs) for ptrs in seen}) == copies
        assert seen[:copies] == seen[copies:]  # the copies come round in turn


def test_an_op_is_timed_on_varied_values_without_touching_the_global_random_state():
    """Max pooling runs several times faster on one repeated value than on a network's varied data, so
    the table's tensors hold seeded uniform values: activations in [-1, 1), weights in [0.5, 1.5)."""
    seen = []
    conv = next(op for op in trace(tiny(8), 16) if op.key.startswith("conv2d"))
    spy = dataclasses.replace(conv, func=lambda x, weight, *rest: seen.append((x.clone(), weight.clone())))
    state = torch.random.get_rng_state()
    spy.bind(torch.device("cpu"))()
    spy.bind(torch.device("cpu"))()
    assert torch.equal(torch.random.get_rng_state(), state)
    (x, weight), (x_again, _) = seen
    assert x.unique().numel() > x.numel() // 2 and torch.equal(x, x_again)  # varied, and seeded
    assert -1 <= x.min() < 0 < x.max() < 1 and 0.5 <= weight.min() and weight.max() < 1.5


def test_no_timed_op_returns_nan_batch_norms_get_a_positive_running_variance():
    ops, _ = distinct(trace(space.load("resnet50"), 64))
    norms = [op for op in ops.values() if "batch_norm" in op.key]
    assert norms and all(spec.weight for op in norms for spec in op.args[1:5])  # running mean/var, weight, bias
    for op in ops.values():
        out = op.bind(torch.device("cpu"))()
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                assert not torch.isnan(t).any(), op.key


def test_a_tiny_network_is_predicted_within_a_generous_factor(cache):
    key = key_here("cpu", threads=1)
    table = Table(key)
    fit = calibrate(table, [tiny(c, skip) for c in (8, 16, 32, 64) for skip in (None, "residual")], resolution=32)
    assert set(fit) == {"per_network", "scale_conv", "scale_grouped", "scale_memory", "per_op"}
    assert Table(key).overhead == fit  # stored beside the ops
    g = tiny(24, branches=2)
    predicted, measured = predict(g, 32, table).ms, measure(g, 32, key)
    assert measured / 3 < predicted < measured * 3


def test_networks_are_measured_in_passes_over_all_of_them(monkeypatch):
    """A burst of load should spoil one of a network's measurements, not all: each pass times every
    network once, in turn, and each network keeps one measurement per pass."""
    order = []
    monkeypatch.setattr(model, "measure", lambda g, resolution, key, on=None: order.append(g["name"]) or len(order))
    nets = [tiny(8), tiny(16)]
    assert model.measure_passes(nets, 32, key_here("cpu", threads=1), passes=3) == [[1, 3, 5], [2, 4, 6]]
    assert order == ["tiny8", "tiny16"] * 3


@pytest.mark.parametrize("text,ms", [("20ms", 20), ("1.5s", 1500), ("800us", 0.8), ("2e1 ms", 20), ("3µs", 0.003)])
def test_time_budgets(text, ms):
    assert is_time(text) and math.isclose(parse_ms(text), ms)
    assert parse_budget(text) == (0, pytest.approx(ms))


def test_flop_budgets_are_still_flops():
    assert parse_budget("2GFLOPs") == (2_000_000_000, None)
    assert parse_budget("20m") == (20_000_000, None)  # m is mega for FLOPs, as before; ms is a time


@given(st.text(max_size=12))
@settings(max_examples=300, deadline=None)
def test_any_budget_text_is_read_or_refused_in_one_line(text):
    try:
        flops, ms = parse_budget(text)
    except UserError as e:
        assert str(e).startswith("--budget: ") and "\n" not in str(e)
        return
    assert (flops > 0) != (ms is not None and ms > 0)


@given(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["s", "ms", "us", "µs"]))
@settings(max_examples=200, deadline=None)
def test_any_number_of_seconds_is_read_or_refused(number, unit):
    try:
        ms = parse_ms(f"{number}{unit}")
    except UserError as e:
        assert "\n" not in str(e)
        return
    assert 0 < ms <= 86_400_000


def test_studies_made_before_latency_have_a_flop_objective():
    old = Settings.from_json(json.dumps({"budget": 600_000_000, "space": "mobilenet"}))
    assert (old.objective, old.latency_budget, old.latency_device) == ("flops", None, None)


def test_settings_hold_the_latency_key_typed_and_store_it_as_before():
    """Settings.latency_device is a DeviceKey, stored as the same dict a study has always held; a key stored
    before `host` existed loads with none."""
    key = deploy_key("cpu")
    stored = json.loads(Settings(budget=0, latency_budget=5.0, latency_device=key).to_json())
    assert stored["latency_device"] == asdict(key)
    assert Settings.from_json(json.dumps(stored)).latency_device == key
    before_host = {k: v for k, v in asdict(key).items() if k != "host"}
    loaded = Settings.from_json(json.dumps({**stored, "latency_device": before_host})).latency_device
    assert isinstance(loaded, DeviceKey) and loaded == key and table_file(loaded) == table_file(key)


def test_a_latency_study_refuses_to_resume_on_another_device(tmp_path, cache):
    calibrate(Table(deploy_key("cpu")), [tiny(c) for c in (8, 16, 32)], resolution=32)  # fitted small, for speed
    explore("search", "--budget", "5ms", "--study", "lat", "--no-run", "--resolution", "32", *QUICK, cwd=tmp_path)
    url = f"sqlite:///{tmp_path}/studies/lat/study.db"
    study = optuna.load_study(study_name="lat", storage=url)
    stored = settings_of(study)
    assert stored.latency_budget == 5.0 and stored.budget == 0 and stored.objective == "latency"
    assert stored.latency_device.name == key_here().name
    assert study.metric_names == ["proxy accuracy", "latency (ms, predicted)"]
    stored.latency_device = dataclasses.replace(stored.latency_device, name="Another CPU 9000")
    store_settings(study, stored)
    run = explore("search", "--study", "lat", cwd=tmp_path, check=False)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Another CPU 9000" in run.stderr and "--device" in run.stderr


def test_explore_latency_json(tmp_path, cache):
    key = key_here("cpu", threads=1)
    calibrate(Table(key), [tiny(c) for c in (8, 16, 32)], resolution=32)
    (tmp_path / "tiny.yaml").write_text(json.dumps(tiny(16, skip="residual")))
    run = explore("latency", "tiny.yaml", "-r", "32", "--threads", "1", "--json", cwd=tmp_path)
    report = json.loads(run.stdout)
    assert {"name", "resolution", "batch", "device", "threads", "predicted_ms", "measured_ms", "ops"} <= set(report)
    assert report["resolution"] == 32 and report["threads"] == 1 and report["batch"] == 1
    assert report["predicted_ms"] > 0 and report["measured_ms"] > 0
    assert sum(op["count"] for op in report["ops"]) == len(trace(space.load(tiny(16, skip="residual")), 32))


@pytest.mark.parametrize("args,flag", [(["--device", "tpu"], "--device"), (["--threads", "0"], "--threads"),
                                       (["--batch", "0"], "--batch"), (["-r", "2"], "resolution")])
def test_explore_latency_bad_input_is_one_line(tmp_path, cache, args, flag):
    run = explore("latency", "mobilenet", "--no-measure", *args, cwd=tmp_path, check=False)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert flag in run.stderr


def test_a_latency_budgeted_search_keeps_to_it_and_reports_on_latency(tmp_path, cache):
    """`--budget 5ms`: every trained trial is predicted within it, and the report's hypervolume is on latency."""
    calibrate(Table(deploy_key("cpu")), [tiny(c) for c in (8, 16, 32)], resolution=32)  # fitted small, for speed
    explore("search", "--budget", "5ms", "--study", "lat", "--trials", "2", "--resolution", "32", *QUICK, cwd=tmp_path)
    study = optuna.load_study(study_name="lat", storage=f"sqlite:///{tmp_path}/studies/lat/study.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and all(0 < t.values[1] == t.user_attrs["latency_ms"] <= 5.0 for t in done)
    explore("report", "lat", cwd=tmp_path)
    page = (tmp_path / "studies" / "lat" / "report.html").read_text()
    box = page[page.index("<h2>Hypervolume</h2>"):page.index('<div id="hypervolume"')]
    assert "latency (ms, predicted) 0" in box and float(box.split("Now ")[1].split()[0]) > 0


def test_jobs_fit_the_latency_model_once_before_the_workers_and_never_for_another_device(tmp_path, cache):
    """`--jobs N` fits a study's latency model in the parent (the workers would each fit it at once, under one
    another's load); a fitted table is left alone, and a study from another device is refused before any op is
    measured into that device's table."""
    settings = Settings(budget=0, latency_budget=5.0, objective="latency", latency_device=asdict(deploy_key("cpu")))
    table = Table(deploy_key("cpu"))
    calibrate(table, [tiny(c) for c in (8, 16)], resolution=32)
    assert not fit_latency_model(settings, "cpu")  # already fitted: nothing measured
    other = Settings(budget=0, latency_budget=5.0, latency_device=dataclasses.replace(settings.latency_device,
                                                                                           name="Another CPU"))
    with pytest.raises(UserError, match="Another CPU"):
        fit_latency_model(other, "cpu")
    assert not table_file(other.latency_device).exists()
