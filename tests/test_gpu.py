"""The CUDA paths, checked on CPU: precision by compute capability, the device a study stores and
refuses to change, cuDNN's autotuner set per run, the GPU preset. Device properties are faked
(torch.cuda's queries monkeypatched); the training itself is real, on CPU. What only a GPU can show
is run by benchmarks/gpu_check.sh."""
import dataclasses
import json
import os
import subprocess
import sys
import time

import optuna
import pytest
import torch
from test_search import QUICK, ROOT, explore
from test_trainer import make_data, tiny_cnn

import space
from explorer.base.errors import UserError
from explorer.base.settings import GPU_PROXY, PROXY, Recipe, Settings, proxy_preset
from explorer.commands import latency as latency_command
from explorer.commands import pool, runner
from explorer.studies.store import settings_of, store_settings
from explorer.trial import candidate
from explorer.trial import device as devices
from explorer.trial.candidate import check_device, deploy_key
from explorer.trial.latency import DeviceKey, Table, key_here, table_file
from explorer.trial.latency import lock as latency_lock
from explorer.trial.latency.table import CUDA_HOST_THREADS
from explorer.trial.latency.trace import trace
from explorer.trial.trainer import resolve_device, train

H200 = {"device": "cuda", "device_name": "NVIDIA H200", "precision": "bf16"}


def fake_gpus(monkeypatch, name="NVIDIA H200", capability=(9, 0), count=1):
    """torch.cuda as a machine with `count` GPUs of this name and compute capability would answer."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


@pytest.mark.parametrize("name, capability, precision", [
    ("NVIDIA H200", (9, 0), "bf16"), ("NVIDIA A100-SXM4-80GB", (8, 0), "bf16"), ("NVIDIA GeForce RTX 3090", (8, 6), "bf16"),
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16"), ("Tesla T4", (7, 5), "fp16"),  # bf16 is emulated there: fp16 + scaler
])
def test_precision_follows_the_compute_capability(monkeypatch, name, capability, precision):
    fake_gpus(monkeypatch, name, capability)
    assert devices.precision_for(torch.device("cuda:0")) == precision
    assert devices.device_settings(torch.device("cuda")) == {"device": "cuda", "device_name": name,
                                                              "precision": precision}
    assert devices.precision_for(torch.device("cpu")) == "fp32"


def test_only_fp16_scales_the_loss():
    cpu = torch.device("cpu")
    assert devices.grad_scaler(cpu, "fp16").is_enabled()
    assert not devices.grad_scaler(cpu, "bf16").is_enabled() and not devices.grad_scaler(cpu, "fp32").is_enabled()
    with pytest.raises(ValueError, match="precision"):
        devices.autocast(cpu, "fp8")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_runs_in_each_precision(precision):
    """The autocast and scaler paths a GPU takes, run for real on CPU (autocast there supports both)."""
    torch.manual_seed(0)
    result = train(tiny_cnn(), make_data(), Recipe(epochs=2, batch_size=64), torch.device("cpu"), precision=precision)
    assert 0.2 < result.val_accuracy <= 1  # learns (chance is 0.1): the scaled step updates the weights


def test_cudnn_autotuning_is_set_for_one_run_and_restored(monkeypatch):
    """On by default it changed every later timing in the process; now a run sets it and puts it back."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    seen = []
    train(tiny_cnn(), make_data(n_train=128), Recipe(epochs=1, batch_size=64), torch.device("cpu"),
          on_epoch=lambda epoch, acc: seen.append(torch.backends.cudnn.benchmark))
    assert seen == [False] and torch.backends.cudnn.benchmark is True
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    train(tiny_cnn(), make_data(n_train=128), Recipe(epochs=1, batch_size=64), torch.device("cpu"), autotune=True,
          on_epoch=lambda epoch, acc: seen.append(torch.backends.cudnn.benchmark))
    assert seen == [False, True] and torch.backends.cudnn.benchmark is False


@pytest.mark.parametrize("kind, preset", [("cuda", GPU_PROXY), ("cpu", PROXY), ("mps", PROXY)])
def test_a_new_study_gets_its_device_kinds_preset(kind, preset):
    assert proxy_preset(kind) == preset
    here = {**H200, "device": kind}
    s = runner.make_settings({"budget": "2GFLOPs", "dataset": "fashion-mnist", "space": "mobilenet"}, None, here)
    assert s.proxy == preset and (s.device, s.precision) == (kind, "bf16")
    digits = runner.make_settings({"budget": "2GFLOPs", "dataset": "digits", "space": "mobilenet"}, None, here)
    assert digits.proxy_resolution == 16  # digits' 8 px, upsampled, on either device


def test_the_gpu_preset_is_the_full_faithful_proxy():
    assert (GPU_PROXY.width, GPU_PROXY.train_images, GPU_PROXY.batch_size) == (1.0, None, 512)
    assert GPU_PROXY.resolution == 28  # Fashion-MNIST's and MNIST's own


def test_flags_win_over_the_preset():
    s = runner.make_settings({"budget": "2GFLOPs", "space": "mobilenet", "dataset": "digits", "proxy_width": 0.25,
                              "batch_size": 128, "train_images": 500}, None, H200)
    assert (s.proxy_width, s.recipe.batch_size, s.train_images) == (0.25, 128, 500)
    assert s.proxy_depth == GPU_PROXY.depth and s.recipe.epochs == GPU_PROXY.epochs


def test_studies_made_before_the_device_was_stored_trained_on_cpu_in_fp32():
    old = Settings.from_json(json.dumps({"budget": 600_000_000, "space": "mobilenet"}))
    assert (old.device, old.precision, old.cudnn_benchmark) == ("cpu", "fp32", False)
    assert "device" in Settings().to_json() and "precision" in Settings().to_json()


@pytest.mark.parametrize("stored, here", [
    ({"device": "cpu", "precision": "fp32"}, ("NVIDIA H200", (9, 0))),   # a CPU study, a GPU worker
    ({**H200}, ("Tesla V100-SXM2-16GB", (7, 0))),                        # bf16 trials, an fp16 GPU
])
def test_another_device_or_precision_is_refused_in_one_line(monkeypatch, stored, here):
    fake_gpus(monkeypatch, *here)
    settings = Settings(**stored)
    with pytest.raises(UserError, match=r"^--device: this study's trials train on .* start another --study$") as e:
        check_device(settings, torch.device("cuda:0"))
    assert "\n" not in str(e.value) and settings.precision in str(e.value)
    check_device(Settings(**{**stored, "device": "cuda", "precision": devices.precision_for(torch.device("cuda"))}),
                 torch.device("cuda"))  # the same kind and precision: another GPU model may join


def test_the_differences_name_device_and_precision():
    assert Settings(**H200).differences(Settings()) == ["device cpu → cuda", "precision fp32 → bf16"]


def test_resuming_or_joining_on_another_kind_of_device_is_refused(tmp_path):
    """Fails on the old code: it stored no device, and a CUDA study resumed on CPU mixed the two."""
    explore("search", "--budget", "2GFLOPs", "--study", "dev", "--no-run", "--device", "cpu", *QUICK, cwd=tmp_path)
    url = f"sqlite:///{tmp_path}/studies/dev/study.db"
    study = optuna.load_study(study_name="dev", storage=url)
    stored = settings_of(study)
    assert (stored.device, stored.precision) == ("cpu", "fp32") and stored.device_name
    store_settings(study, Settings(**{**vars(stored), **H200}))  # as a study made on an H200 would hold
    for command in (["search", "--study", "dev"], ["worker", "--study", "dev", "--storage", url]):
        run = explore(*command, "--device", "cpu", cwd=tmp_path, check=False)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert "NVIDIA H200" in run.stderr and "bf16" in run.stderr and "Traceback" not in run.stderr
    trials = optuna.load_study(study_name="dev", storage=url).get_trials()
    assert {t.state for t in trials} == {optuna.trial.TrialState.WAITING}  # only the enqueued classics


def test_a_bad_device_is_one_line(tmp_path):
    run = explore("search", "--budget", "2GFLOPs", "--device", "tpu", *QUICK, cwd=tmp_path, check=False)
    assert run.returncode == 2 and run.stderr.startswith("error: --device") and "Traceback" not in run.stderr
    assert not os.path.exists(tmp_path / "studies")


# Latency on CUDA -------------------------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "explore" / "latency"


def two_gpus(monkeypatch):
    """GPU 0 an A100, GPU 1 an H200."""
    fake_gpus(monkeypatch, count=2)
    names = {0: "NVIDIA A100-SXM4-80GB", 1: "NVIDIA H200"}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: names[torch.device(device).index or 0])


def test_a_cuda_key_names_the_indexed_gpu_and_the_host_cpu(monkeypatch):
    two_gpus(monkeypatch)
    key = deploy_key("cuda:1")  # the old key named GPU 0 whatever the index
    assert (key.device, key.name, key.host) == ("cuda", "NVIDIA H200", devices.cpu_model())
    assert deploy_key("cuda").name == "NVIDIA A100-SXM4-80GB"
    assert "NVIDIA H200 (host " in key.short() and "thread" not in key.short()
    assert table_file(key_here("cuda:1")) != table_file(DeviceKey(**{**vars(key), "host": "another CPU"}))


def test_cuda_keys_count_threads_one_way(monkeypatch):
    """search priced on every allowed core, `explore latency` on torch's thread count: two keys, two tables."""
    two_gpus(monkeypatch)
    torch_threads = torch.get_num_threads()
    monkeypatch.setattr(candidate, "allowed_cpus", lambda: list(range(torch_threads + 3)))
    key, on = latency_command.device_key("cuda:1", None, 1)
    assert key == deploy_key("cuda:1") and key.threads == CUDA_HOST_THREADS and on == torch.device("cuda:1")
    with pytest.raises(UserError, match="^--threads: .*--device cpu only"):
        latency_command.device_key("cuda", 4, 1)


def test_explore_latency_auto_means_what_search_auto_means(monkeypatch):
    fake_gpus(monkeypatch)
    key, on = latency_command.device_key("auto", None, 1)
    assert key.device == "cuda" and on.type == resolve_device("auto").type == "cuda"  # the old one said cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert latency_command.device_key("auto", None, 1)[0].device == "cpu"


def test_a_cpu_key_file_is_the_one_made_before_the_host_was_keyed():
    key = key_here("cpu", threads=1)
    assert key.host == "" and "host" not in key.stored() and key.stored() == {
        k: v for k, v in dataclasses.asdict(key).items() if k != "host"}


def test_new_ops_are_timed_on_the_named_gpu_with_autotuning_off(monkeypatch, cache):
    """The old table timed every cuda:N table on GPU 0 (and synchronised GPU 0 only)."""
    two_gpus(monkeypatch)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as a trial that chose it would leave it
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(("sync", torch.device(device))))

    class FakeOp:
        key = "conv2d(T[1x3x8x8])"

        def bind(self, device, cold_bytes=0):
            seen.append(("bind", device, torch.backends.cudnn.benchmark))
            return lambda: None

    settings = Settings(budget=0, latency_budget=5.0, objective="latency", latency_device=dataclasses.asdict(
        deploy_key("cuda:1")), **H200)
    table = candidate.latency_table(settings, torch.device("cuda:1"))
    assert table.measure([FakeOp()]) == 1 and FakeOp.key in Table(table.key).ops
    assert seen[0] == ("bind", torch.device("cuda:1"), False)
    assert {entry[1] for entry in seen[1:]} == {torch.device("cuda:1")}
    assert torch.backends.cudnn.benchmark is True  # restored after timing


HOLD = """
import sys, time
from explorer.trial.latency import {lock}
with {lock}():
    print("held", flush=True)
    time.sleep({seconds})
"""


def hold(lock: str, seconds: float):
    """Another process holding the training or timing lock; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(lock=lock, seconds=seconds)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_timing_waits_for_training_elsewhere_and_training_for_timing(cache):
    trainer = hold("training", 1.5)
    started = time.perf_counter()
    with latency_lock.timing():
        assert time.perf_counter() - started > 1.0  # until the other process's run ended
    timer = hold("timing", 1.5)
    started = time.perf_counter()
    with latency_lock.training():
        assert time.perf_counter() - started > 1.0
    assert trainer.wait() == timer.wait() == 0


def test_trainers_share_the_lock_and_timing_nests_in_one_process(cache):
    trainer = hold("training", 1.0)
    started = time.perf_counter()
    with latency_lock.training():
        assert time.perf_counter() - started < 0.5 and trainer.poll() is None  # shared: no wait
        with latency_lock.timing():  # in this process's own run: takes nothing more, never waits for itself
            pass
    trainer.wait()


# What only a GPU shows: run by benchmarks/gpu_check.sh; skipped where there is none ------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")


@needs_cuda
def test_a_proxy_learns_on_the_gpu_in_its_precision():
    device = torch.device("cuda")
    torch.manual_seed(0)
    result = train(tiny_cnn(), make_data(), Recipe(epochs=3, batch_size=64), device)
    assert 0.2 < result.val_accuracy <= 1 and result.device.startswith("cuda")


@needs_cuda
def test_the_real_gpus_key_and_table(cache):
    index = torch.cuda.device_count() - 1
    key = deploy_key(f"cuda:{index}")
    assert key.name == torch.cuda.get_device_name(index) and key.threads == CUDA_HOST_THREADS
    latency_table = Table(key, on=torch.device(f"cuda:{index}"))
    conv = [op for op in trace_ops() if op.key.startswith("conv2d")]
    assert latency_table.measure(conv) == len({op.key for op in conv}) and all(ms > 0 for ms in latency_table.ops.values())


def trace_ops():
    return trace(space.named("resnet50"), 64)


# The prepared device check ---------------------------------------------------------------------------

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_the_gpu_check_parses_every_command_and_finds_every_file():
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout + run.stderr
    steps = [line.split(":")[0].split(maxsplit=1)[1] for line in run.stdout.splitlines() if line.startswith("ok ")]
    assert steps == ["CUDA tests", "CPU vs CUDA accuracy", "search on CUDA", "latency, batch 1", "latency, batch 64",
                     "proxy throughput", "jobs scaling"]
    assert "--trials 6 --jobs 2" in run.stdout and "--batch 64" in run.stdout and "--profile" in run.stdout


def test_the_gpu_checks_dry_run_fails_when_a_command_does_not_parse(tmp_path):
    """A python that refuses jobs_scaling.py's flags (and runs nothing else): the dry run must say so."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\ncase "$*" in *jobs_scaling*) echo "unrecognized arguments" >&2; exit 2;; esac\n')
    fake.chmod(0o755)
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHON": str(fake)})
    assert run.returncode != 0 and "FAIL  jobs scaling" in run.stdout and "unrecognized arguments" in run.stdout
    assert "don't parse" in run.stdout


# Workers per GPU -------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, per_gpu, jobs", [("cuda", 2, 8), ("auto", 3, 12), ("cuda:2", 4, 4)])
def test_jobs_per_gpu_gives_each_gpu_its_share(monkeypatch, device, per_gpu, jobs):
    fake_gpus(monkeypatch, count=4)
    assert pool.jobs_for(1, per_gpu, device) == jobs
    placed = [pool.worker_device(device, i, 4) for i in range(jobs)]
    assert all(placed.count(gpu) == per_gpu for gpu in set(placed))


@pytest.mark.parametrize("jobs, device, flag", [(2, "cuda", "--jobs-per-gpu"), (1, "cpu", "--jobs-per-gpu"),
                                                (1, "tpu", "--device")])
def test_jobs_per_gpu_is_refused_where_it_means_nothing(monkeypatch, jobs, device, flag):
    fake_gpus(monkeypatch, count=2)
    with pytest.raises(UserError, match=f"^{flag}: "):
        pool.jobs_for(jobs, 2, device)
    assert pool.jobs_for(3, None, "cpu") == 3
