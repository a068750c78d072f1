"""Timing and training kept apart on one machine, across processes (`fcntl.flock`).

An op timed while other processes train on the same device measures their contention, not the op:
with `--jobs N` every worker times the ops its draws bring, beside N - 1 trainers. So a training run
holds one machine-wide lock shared (`training`), and timing holds it exclusively (`timing`): it waits
for the runs in progress to end, and new runs wait for it. Trainers pass through a second lock, the
turnstile, which a timer holds while it waits, so a stream of overlapping runs can't starve it.
Timing also runs with cuDNN's autotuner off, whatever the trials before it chose.

Within one process the locks nest: timing inside timing, or inside this process's own training run,
takes nothing more (flock would otherwise wait for the process itself). Where there is no fcntl
(Windows) nothing is locked.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..device import cudnn_benchmark

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

_held = {"timing": 0, "training": 0}  # this process's depth in each


def cache_dir() -> Path:
    """The latency tables' folder, and the locks': shared by every project on the machine, like the
    dataset cache (explorer.trial.data)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "explore" / "latency"


@contextlib.contextmanager
def _flock(name: str, mode: int) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    path = cache_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # created if missing, never truncated
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def timing() -> Iterator[None]:
    """Time ops or networks alone on the machine (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        if not any(_held.values()):
            stack.enter_context(_flock("turnstile.lock", fcntl and fcntl.LOCK_EX))
            stack.enter_context(_flock("timing.lock", fcntl and fcntl.LOCK_EX))
        stack.enter_context(cudnn_benchmark(False))
        _held["timing"] += 1
        try:
            yield
        finally:
            _held["timing"] -= 1


@contextlib.contextmanager
def training() -> Iterator[None]:
    """Train while no process times (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        if not any(_held.values()):
            with _flock("turnstile.lock", fcntl and fcntl.LOCK_EX):
                stack.enter_context(_flock("timing.lock", fcntl and fcntl.LOCK_SH))
        _held["training"] += 1
        try:
            yield
        finally:
            _held["training"] -= 1
