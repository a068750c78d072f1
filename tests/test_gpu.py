"""The CUDA paths, checked on CPU: precision by compute capability, the device a study stores and
refuses to change, cuDNN's autotuner set per run, the GPU preset. Device properties are faked
(torch.cuda's queries monkeypatched); the training itself is real, on CPU. What only a GPU can show
is run by benchmarks/gpu_check.sh."""
import json
import os

import optuna
import pytest
import torch
from test_search import QUICK, explore
from test_trainer import make_data, tiny_cnn

from explorer.base.errors import UserError
from explorer.base.settings import GPU_PROXY, PROXY, Recipe, Settings, proxy_preset
from explorer.commands import runner
from explorer.studies.store import settings_of, store_settings
from explorer.trial import device as devices
from explorer.trial.candidate import check_device
from explorer.trial.trainer import train

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
    assert (s.proxy_width, s.recipe["batch_size"], s.train_images) == (0.25, 128, 500)
    assert s.proxy_depth == GPU_PROXY.depth and s.recipe["epochs"] == GPU_PROXY.epochs


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
