"""A fast proxy trainer for small CNNs.

Search needs thousands of short training runs, so the whole loop is built to
keep the accelerator busy: the dataset lives on the device as one uint8
tensor, augmentation is batched tensor arithmetic on the device, and the host
synchronises with the device only at the end of an epoch (one divergence
check, one accuracy read-out).  The same code path runs on CPU and GPU.

The data argument is duck-typed: any object with the attributes of
``explorer.trial.data.Splits`` (``train_x, train_y, val_x, val_y, mean, std, flip``)
works: the trainer needs no dataset loader, only torch, the recipe
(explorer.base.settings) and the CPU-thread policy (explorer.base.cpus).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..base.cpus import allowed_cpus, busy_cores, threads_for
from ..base.settings import CUDNN_BENCHMARK, Recipe
from .device import autocast, cudnn_benchmark, grad_scaler, precision_for

AUX_WEIGHT = 0.3


class Diverged(Exception):
    """The training loss became NaN or inf; the message says in which epoch."""


class UnusableCheckpoint(ValueError):
    """A checkpoint file is unreadable or holds another run (recipe, model or data): resuming it would mix
    two runs, and deleting it is the user's call."""


@dataclass
class Result:
    val_accuracy: float  # final-epoch validation accuracy in [0, 1]
    history: list[float]  # validation accuracy after each epoch
    epochs_run: int
    wall_time: float  # seconds, the whole call including evaluation
    cpu_time: float  # this process's CPU seconds for the run, a checkpoint's earlier parts included
    train_images_per_s: float  # training steps at steady state: evaluation and (of 2+ epochs) the first excluded
    device: str


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a user-facing device name into a device, failing early and clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use 'cpu' or 'auto'"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        return device
    raise ValueError(f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


_trainers = 1  # trainers side by side in this machine's share of cores (explore search --jobs N)


def _physical_cores() -> int:
    """Physical cores this process may run on; hyperthreads don't speed up convolutions."""
    cpus = allowed_cpus()
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:  # no sysfs (not Linux): count logical CPUs instead
            return len(cpus)
    return max(1, len(cores))


def set_cpu_threads(workers: int | None = None) -> int:
    """Use the physical cores other processes leave idle for intra-op parallelism; returns the threads.

    Called before each training (each trial), so the threads follow the machine's load: all cores on a
    quiet machine, fewer beside a busy process, where threads waiting for a descheduled partner would
    spin (explorer/cpus.py). With ``workers`` trainers side by side (``explore search --jobs N``) each
    takes its share, decided once when the worker starts (the others would count as busy). An explicit
    OMP_NUM_THREADS is respected, since the user (or a launcher running several trainers side by side)
    knows better.
    """
    global _trainers
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    if workers is not None:
        _trainers = workers
    elif _trainers > 1:
        return torch.get_num_threads()
    threads = threads_for(_physical_cores(), _trainers, busy_cores(allowed_cpus()))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


def lr_factor(step: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak LR at a 0-based step; never exactly zero during training.

    onecycle: linear warmup over the first 25% of steps, then linear decay to 0.
    cosine: linear warmup over the first 5% of steps, then cosine decay to 0.
    """
    warmup = max(1, round((0.25 if schedule == "onecycle" else 0.05) * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    remaining = (total_steps - step) / max(1, total_steps - warmup)  # 1 -> ~0
    if schedule == "onecycle":
        return remaining
    return 0.5 * (1 - math.cos(math.pi * remaining))


def augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop (after reflect padding) and optional horizontal flip of a whole batch.

    Both are done by a single gather: every output pixel (b, c, i, j) reads the
    padded input at row dy[b] + i and column dx[b] + j (or dx[b] + W-1-j when
    flipped), so there is no per-image Python loop and no host sync.  The result
    comes out in channels_last layout, which the convolutions want anyway.
    """
    if padding == 0 and not flip:
        return x
    b, _, h, w = x.shape
    device = x.device
    if padding:
        mode = "reflect" if padding < min(h, w) else "constant"
        x = F.pad(x, (padding, padding, padding, padding), mode=mode)
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    rows = dy + torch.arange(h, device=device)
    cols = torch.arange(w, device=device).expand(b, w)
    if flip:
        flipped = torch.rand(b, 1, device=device, generator=generator) < 0.5
        cols = torch.where(flipped, w - 1 - cols, cols)
    cols = dx + cols
    batch = torch.arange(b, device=device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 around a slice put the channel dim last: B×H×W×C.
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def normalisation(data, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel scale and shift that map uint8 pixels to standardised floats."""
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (1 / (255 * std)).to(device), (-mean / std).to(device)


def normalise(x_uint8: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().mul_(scale).add_(shift)


def split_output(output) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Models may return logits, or (logits, [aux_logits, ...]) in training mode."""
    if isinstance(output, (tuple, list)):
        logits, aux = output
        return logits, list(aux)
    return output, []


def _batches(x_uint8, y, batch_size, scale, shift, padding, flip, generator):
    """One epoch of shuffled, normalised, augmented batches, built on the device.

    The last partial batch is dropped so every step has the same shape (one set of kernels, and one
    round of autotuning where cudnn.benchmark is on).
    """
    order = torch.randperm(len(y), device=y.device, generator=generator)
    for i in range(len(y) // batch_size):
        idx = order[i * batch_size : (i + 1) * batch_size]
        x = augment(normalise(x_uint8[idx], scale, shift), padding, flip, generator)
        yield x.contiguous(memory_format=torch.channels_last), y[idx]


def _make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """Nesterov SGD; norm weights and biases (1-d params) are not weight-decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": recipe.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]],
        lr=recipe.peak_lr,
        momentum=recipe.momentum,
        nesterov=recipe.momentum > 0,
    )


def train(
    model: nn.Module,
    data,
    recipe: Recipe,
    device: torch.device,
    on_epoch: Callable[[int, float], None] | None = None,
    precision: str | None = None,
    autotune: bool = CUDNN_BENCHMARK,
    checkpoint: Path | None = None,
) -> Result:
    """Train ``model`` in place and report validation accuracy after each epoch.

    ``on_epoch(epoch, val_acc)`` (1-based epoch) may raise to stop training,
    e.g. for pruning; the exception propagates.  Raises ``Diverged`` when the
    loss of an epoch is not finite.  Data order and augmentation depend only on
    ``recipe.seed`` (bitwise reproducible on CPU given the same initial weights and the same number of
    threads, which follows the machine's load unless OMP_NUM_THREADS pins it). ``precision``: fp32, bf16
    or fp16 (default: the device's, explorer.trial.device.precision_for); ``autotune``: cudnn.benchmark
    for this run only. ``checkpoint``: a file that holds the run's state after each finished epoch, so a
    killed run resumes where it stopped, bitwise as if never stopped (the caller deletes it when done);
    an unreadable one, or one of another recipe, model or dataset, raises UnusableCheckpoint.
    """
    with cudnn_benchmark(autotune):
        return _train(model, data, recipe, device, on_epoch, precision or precision_for(device), checkpoint)


def _train(model, data, recipe: Recipe, device: torch.device, on_epoch, precision: str, checkpoint) -> Result:
    start, cpu_start = time.perf_counter(), time.process_time()
    run = _set_up(model, data, recipe, device, precision)
    checkpoint = None if checkpoint is None else Path(checkpoint)
    history: list[float] = []
    if checkpoint is not None and checkpoint.exists():
        history, earlier_cpu_s = _resume(checkpoint, model, run, recipe)
        cpu_start -= earlier_cpu_s  # so CPU time counts the resumed parts too
    epoch_seconds: list[float] = []
    for epoch in range(len(history) + 1, recipe.epochs + 1):
        epoch_start = time.perf_counter()
        _train_epoch(model, run, recipe, epoch)
        epoch_seconds.append(time.perf_counter() - epoch_start)
        val_acc = _evaluate(model, run.val_x, run.val_y, run.scale, run.shift, device, 1024, precision)
        history.append(val_acc)
        if checkpoint is not None:
            _save(checkpoint, model, run, recipe, history, time.process_time() - cpu_start)
        if on_epoch is not None:
            on_epoch(epoch, val_acc)
    steady = epoch_seconds[1:] or epoch_seconds  # the first epoch pays for warm-up (CUDA start, autotuning)
    images, train_seconds = len(steady) * run.steps_per_epoch * recipe.batch_size, sum(steady)
    return Result(
        val_accuracy=history[-1],
        history=history,
        epochs_run=recipe.epochs,
        wall_time=time.perf_counter() - start,
        cpu_time=time.process_time() - cpu_start,
        train_images_per_s=images / train_seconds if train_seconds > 0 else float("inf"),
        device=str(device),
    )


@dataclass
class _Run:
    """What one training run's loop touches, put on the device once, up front."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    flip: bool
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: str
    criterion: nn.Module
    steps_per_epoch: int
    step: int = 0


def _set_up(model: nn.Module, data, recipe: Recipe, device: torch.device, precision: str) -> _Run:
    if device.type == "cpu":
        set_cpu_threads()
    steps_per_epoch = len(data.train_y) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {recipe.batch_size} exceeds the {len(data.train_y)} training images")
    model.to(device=device, memory_format=torch.channels_last)
    scale, shift = normalisation(data, device)
    return _Run(data.train_x.to(device), data.train_y.to(device), data.val_x.to(device), data.val_y.to(device),
                scale, shift, bool(data.flip), torch.Generator(device=device).manual_seed(recipe.seed),
                _make_optimizer(model, recipe), grad_scaler(device, precision), precision,
                nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing), steps_per_epoch)


def _identity(model: nn.Module, run: _Run, recipe: Recipe) -> dict:
    """What a checkpoint must match to be resumed: the recipe, every tensor's name and shape, and the data
    (its shape and a cheap checksum: the same model and recipe on another dataset must not resume)."""
    return {"recipe": repr(recipe), "shapes": [(k, list(v.shape)) for k, v in model.state_dict().items()],
            "data": [list(run.train_x.shape), int(run.train_x[::97].sum()), int(run.train_y.sum()),
                     list(run.val_x.shape), int(run.val_y.sum())]}


def _save(path: Path, model: nn.Module, run: _Run, recipe: Recipe, history: list[float], cpu_s: float) -> None:
    """Everything the next epoch reads, random streams included; written atomically."""
    device = run.train_x.device
    state = {"identity": _identity(model, run, recipe), "history": history, "step": run.step, "cpu_s": cpu_s,
             "model": model.state_dict(), "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
             "generator": run.generator.get_state(), "cpu_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resume(path: Path, model: nn.Module, run: _Run, recipe: Recipe) -> tuple[list[float], float]:
    """Load a checkpoint into the model and the run; returns the finished epochs' history and the CPU
    seconds they took."""
    try:
        state = torch.load(path, map_location=run.train_x.device, weights_only=True)
        identity = state["identity"]
    except Exception as e:  # noqa: BLE001 - torch.load raises whatever its unpickler met
        raise UnusableCheckpoint(f"checkpoint {path} can't be read as a training checkpoint ({type(e).__name__}); "
                                 "delete it to start afresh") from None
    if identity != _identity(model, run, recipe):
        raise UnusableCheckpoint(f"checkpoint {path} was written by another recipe, model or dataset; "
                                 "delete it to start afresh")
    model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["cpu_rng"].cpu())
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), run.train_x.device)
    run.step = state["step"]
    return list(state["history"]), state["cpu_s"]


def _train_epoch(model: nn.Module, run: _Run, recipe: Recipe, epoch: int) -> None:
    """One pass over the training split; Diverged if its loss isn't finite (the epoch's one host sync)."""
    model.train()
    total_steps = recipe.epochs * run.steps_per_epoch
    device = run.train_x.device
    loss_sum = torch.zeros((), device=device)  # stays on device: no sync per step
    for x, y in _batches(run.train_x, run.train_y, recipe.batch_size, run.scale, run.shift, recipe.crop_padding,
                         run.flip, run.generator):
        for group in run.optimizer.param_groups:
            group["lr"] = recipe.peak_lr * lr_factor(run.step, total_steps, recipe.schedule)
        with autocast(device, run.precision):
            logits, aux = split_output(model(x))
            loss = run.criterion(logits, y)
            for aux_logits in aux:
                loss = loss + AUX_WEIGHT * run.criterion(aux_logits, y)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)  # with fp16: unscaled first, skipped if a gradient overflowed
        run.scaler.update()
        loss_sum += loss.detach()
        run.step += 1
    if not torch.isfinite(loss_sum):
        raise Diverged(f"training loss became non-finite in epoch {epoch}")


def evaluate(
    model: nn.Module,
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    data,
    device: torch.device,
    batch_size: int = 1024,
    precision: str | None = None,
) -> float:
    """Accuracy in [0, 1] of ``model`` on uint8 images, normalised with ``data``'s statistics."""
    scale, shift = normalisation(data, device)
    return _evaluate(model, x_uint8.to(device), y.to(device), scale, shift, device, batch_size,
                     precision or precision_for(device))


def _evaluate(model, x_uint8, y, scale, shift, device, batch_size, precision: str) -> float:
    """Counts correct predictions on the device; a single sync reads the total."""
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.inference_mode(), autocast(device, precision):
        for i in range(0, len(y), batch_size):
            x = normalise(x_uint8[i : i + batch_size], scale, shift)
            logits, _ = split_output(model(x.contiguous(memory_format=torch.channels_last)))
            correct += (logits.argmax(dim=1) == y[i : i + batch_size]).sum()
    model.train(was_training)
    return correct.item() / len(y)
