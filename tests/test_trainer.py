"""Tests for the proxy trainer on tiny synthetic data (fast on a 2-core CPU)."""

import copy
import os
import subprocess
import sys
import time
import warnings

import pytest
import torch
from torch import nn

from explorer.base.cpus import allowed_cpus, busy_cores, threads_for
from explorer.base.settings import Recipe
from explorer.trial import trainer as trainer_module
from explorer.trial.data import Splits
from explorer.trial.trainer import (
    Diverged,
    Result,
    _physical_cores,
    augment,
    evaluate,
    lr_factor,
    resolve_device,
    set_cpu_threads,
    train,
)


def make_data(n_train=512, n_val=200, size=16, num_classes=10, flip=True, seed=0) -> Splits:
    """Each class is a smooth random colour pattern plus noise: easy, yet needs spatial features."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)
    templates = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def sample(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = templates[y] + 0.15 * torch.randn(n, 3, size, size, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = sample(n_train), sample(n_val), sample(n_val)
    pixels = train_x.float() / 255
    return Splits(
        name="synthetic",
        train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x, test_y=test_y,
        num_classes=num_classes, in_channels=3,
        mean=tuple(pixels.mean(dim=(0, 2, 3)).tolist()), std=tuple(pixels.std(dim=(0, 2, 3)).tolist()),
        flip=flip,
    )


def tiny_cnn(num_classes=10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, num_classes),
    )


def dropout_cnn() -> nn.Module:
    return nn.Sequential(*tiny_cnn()[:-1], nn.Dropout(0.3), nn.Linear(32 * 4 * 4, 10))


class AuxNet(nn.Module):
    """Returns (logits, [aux_logits]) in training mode, plain logits in eval mode."""

    def __init__(self):
        super().__init__()
        self.body = tiny_cnn()
        self.aux = nn.Linear(3 * 16 * 16, 10)

    def forward(self, x):
        logits = self.body(x)
        if self.training:
            return logits, [self.aux(x.flatten(1))]
        return logits


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 16 * 16, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


CPU = torch.device("cpu")
FAST = Recipe(epochs=4, batch_size=64, lr=0.2)


@pytest.fixture(scope="module")
def data():
    return make_data()


def test_training_learns_and_reports(data):
    torch.manual_seed(0)
    calls = []
    result = train(tiny_cnn(), data, FAST, CPU, on_epoch=lambda e, acc: calls.append((e, acc)))
    assert isinstance(result, Result)
    assert result.val_accuracy > 0.5  # chance is 0.1
    assert len(result.history) == result.epochs_run == FAST.epochs
    assert result.val_accuracy == result.history[-1]
    assert calls == list(zip(range(1, FAST.epochs + 1), result.history))
    assert result.device == "cpu" and result.wall_time > 0 and result.train_images_per_s > 0


def test_evaluate_matches_training_report_for_any_batch_size(data):
    torch.manual_seed(0)
    model = tiny_cnn()
    result = train(model, data, Recipe(epochs=2, batch_size=64), CPU)
    model.train()
    acc = evaluate(model, data.val_x, data.val_y, data, CPU, batch_size=7)  # uneven last batch
    assert acc == pytest.approx(result.val_accuracy)
    assert model.training  # evaluate restores the caller's mode


def test_nan_forward_raises_diverged(data):
    with pytest.raises(Diverged, match="epoch 1"):
        train(NaNNet(), data, Recipe(epochs=3, batch_size=64), CPU)


def test_huge_lr_raises_diverged(data):
    torch.manual_seed(0)
    with pytest.raises(Diverged):
        train(tiny_cnn(), data, Recipe(epochs=3, batch_size=64, lr=1e6, schedule="cosine"), CPU)


def test_on_epoch_exception_stops_training(data):
    class Pruned(Exception):
        pass

    epochs_seen = []

    def on_epoch(epoch, acc):
        epochs_seen.append(epoch)
        if epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        train(tiny_cnn(), data, Recipe(epochs=5, batch_size=64), CPU, on_epoch=on_epoch)
    assert epochs_seen == [1, 2]


def test_same_seed_and_weights_give_identical_runs(data, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # threads would follow the load
    torch.manual_seed(0)
    initial = tiny_cnn()
    models = [copy.deepcopy(initial) for _ in range(3)]
    recipe = Recipe(epochs=2, batch_size=64, seed=7)
    first = train(models[0], data, recipe, CPU)
    second = train(models[1], data, recipe, CPU)
    train(models[2], data, Recipe(epochs=2, batch_size=64, seed=8), CPU)
    assert first.history == second.history
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
    weights = [m[0].weight for m in models]
    assert not torch.equal(weights[0], weights[2])  # the seed really drives order and augmentation


def test_a_killed_run_resumes_from_its_checkpoint_bitwise(data, monkeypatch, tmp_path):
    """Dropout draws from the global stream and augmentation from the run's, so both must be restored."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    torch.manual_seed(0)
    initial = dropout_cnn()
    recipe, checkpoint = Recipe(epochs=3, batch_size=64, seed=7), tmp_path / "run.ckpt"
    whole = copy.deepcopy(initial)
    torch.manual_seed(1)
    expected = train(whole, data, recipe, CPU)

    class Killed(Exception):
        pass

    def kill_after_first(epoch, acc):
        raise Killed

    torch.manual_seed(1)
    with pytest.raises(Killed):
        train(copy.deepcopy(initial), data, recipe, CPU, on_epoch=kill_after_first, checkpoint=checkpoint)
    first_part_cpu = torch.load(checkpoint, weights_only=True)["cpu_s"]
    torch.manual_seed(99)  # a new process: other weights, another global stream
    resumed = dropout_cnn()
    result = train(resumed, data, recipe, CPU, checkpoint=checkpoint)
    assert result.history == expected.history
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert result.cpu_time > first_part_cpu > 0


def test_a_checkpoint_of_another_recipe_or_dataset_or_unreadable_is_refused(data, tmp_path):
    checkpoint, recipe = tmp_path / "run.ckpt", Recipe(epochs=1, batch_size=64, seed=7)
    train(tiny_cnn(), data, recipe, CPU, checkpoint=checkpoint)
    for other_data, other_recipe in ((data, Recipe(epochs=1, batch_size=64, seed=8)), (make_data(seed=1), recipe)):
        with pytest.raises(ValueError, match="another recipe, model or dataset; delete it"):
            train(tiny_cnn(), other_data, other_recipe, CPU, checkpoint=checkpoint)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="can't be read as a training checkpoint .*; delete it"):
        train(tiny_cnn(), data, recipe, CPU, checkpoint=checkpoint)


def test_aux_logits_are_trained(data):
    torch.manual_seed(0)
    model = AuxNet()
    aux_before = model.aux.weight.detach().clone()
    result = train(model, data, Recipe(epochs=2, batch_size=64), CPU)
    assert len(result.history) == 2
    assert not torch.equal(aux_before, model.aux.weight)


def test_crop_keeps_shape_and_shifts_content():
    x = torch.randn(64, 3, 8, 8)
    padding = 2
    out = augment(x, padding, flip=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    changed = [not torch.equal(out[i], x[i]) for i in range(len(x))]
    assert any(changed) and not all(changed)  # 1 in 25 offsets is the identity
    padded = nn.functional.pad(x, (padding,) * 4, mode="reflect")
    for i in range(len(x)):  # every output is exactly one window of the padded image
        assert any(
            torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
        )


def test_flip_only_when_requested():
    x = torch.randn(64, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 0, flip=False, generator=g), x)
    out = augment(x, 0, flip=True, generator=g)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(flipped[i] or torch.equal(out[i], x[i]) for i in range(len(x)))
    assert 0 < sum(flipped) < len(x)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_lr_schedule_warms_up_peaks_and_decays(schedule):
    total = 100
    factors = [lr_factor(s, total, schedule) for s in range(total)]
    peak = factors.index(max(factors))
    assert max(factors) == pytest.approx(1.0)
    assert factors[0] < 0.3 and 0 < factors[-1] < 0.05
    assert all(a <= b for a, b in zip(factors[:peak], factors[1 : peak + 1]))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :]))
    assert peak == (24 if schedule == "onecycle" else 4)


def test_recipe_round_trip_and_validation():
    recipe = Recipe(epochs=3, lr=0.05, schedule="cosine")
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe(lr=0.1, batch_size=256).peak_lr == pytest.approx(0.2)
    with pytest.raises(ValueError, match="unknown"):
        Recipe.from_dict({"epoch": 3})
    with pytest.raises(ValueError):
        Recipe(schedule="step")


def test_batch_larger_than_training_set_is_rejected(data):
    with pytest.raises(ValueError, match="batch_size"):
        train(tiny_cnn(), data, Recipe(batch_size=10_000), CPU)


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == CPU
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without CUDA")
def test_resolve_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_threads_use_the_cores_other_processes_leave_idle():
    assert threads_for(2, 1, 0.0) == 2 and threads_for(2, 1, 0.3) == 2  # quiet: every core, as before
    assert threads_for(2, 1, 1.0) == 1 and threads_for(2, 1, 7.0) == 1  # one busy process: never a spinning pair
    assert threads_for(8, 4, 0.0) == 2 and threads_for(8, 2, 4.0) == 2 and threads_for(4, 8, 0.0) == 1


def test_a_busy_process_is_seen_and_costs_a_thread(monkeypatch):
    """A real busy loop pinned to one of our CPUs: busy_cores sees it, and set_cpu_threads leaves it that core."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = allowed_cpus()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                           preexec_fn=lambda: os.sched_setaffinity(0, {cpus[0]}))
    threads = torch.get_num_threads()
    try:
        time.sleep(0.5)
        assert busy_cores(cpus[:1]) >= 0.5
        assert set_cpu_threads() <= max(1, _physical_cores() - 1) and torch.get_num_threads() == set_cpu_threads()
    finally:
        hog.kill()
        hog.wait()
        torch.set_num_threads(threads)


def test_an_explicit_omp_num_threads_is_respected(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert set_cpu_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_images_per_second_leave_the_first_epochs_warm_up_out(data, monkeypatch):
    clock = [0.0]  # a fake clock: the first epoch takes 10 s (as CUDA start-up and autotuning would), later ones 1 s

    def timed_epoch(model, run, recipe, epoch):
        clock[0] += 10.0 if epoch == 1 else 1.0

    monkeypatch.setattr(trainer_module, "_train_epoch", timed_epoch)
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    result = train(tiny_cnn(), data, Recipe(epochs=3, batch_size=32), CPU)
    assert result.train_images_per_s == pytest.approx(len(data.train_y) // 32 * 32)  # one epoch's images a second


def test_host_reads_do_not_grow_with_steps_per_epoch(monkeypatch):
    """On any device: tensor-to-host reads per run must not depend on the number of steps per epoch."""
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (reads.append(_n), _o(self, *a, **k))[1])

    def count_reads(n_train):
        reads.clear()
        train(tiny_cnn(), make_data(n_train=n_train), Recipe(epochs=2, batch_size=32), torch.device("cpu"))
        return len(reads)

    few, many = count_reads(n_train=64), count_reads(n_train=512)
    assert few > 0, "the per-epoch divergence check reads the loss once an epoch"
    assert few == many


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-sync check needs a CUDA device")
def test_host_syncs_do_not_grow_with_steps_per_epoch():
    """Syncs per run must not depend on the number of steps: none inside the epoch loop."""
    device = torch.device("cuda")

    def count_syncs(n_train):
        data = make_data(n_train=n_train)
        recipe = Recipe(epochs=2, batch_size=64)
        train(tiny_cnn(), data, recipe, device)  # warm-up: cudnn.benchmark autotuning may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train(tiny_cnn(), data, recipe, device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert count_syncs(n_train=128) == count_syncs(n_train=1024)
