"""A lookup table of op latencies measured on this device, cached per device key.

The key holds what changes a kernel's speed: the device's name, the torch version, the number of
CPU threads, the dtype and the batch size (and the measuring method's version, so a change to it
drops old tables). A table is one JSON file under `$XDG_CACHE_HOME/explore/latency/` (default
`~/.cache`), named by a hash of its key and holding the key itself: a file whose key differs, or
that can't be read, is ignored and rebuilt. Ops are measured lazily, the first time a network
needs them, and the file is rewritten atomically (explorer/base/files.py) merged with whatever
another process added meanwhile.

A measurement is the median over `REPEATS` timed runs after `WARMUP` untimed calls; each run
times enough back-to-back calls to last at least `MIN_RUN_S` (so a 5 µs ReLU is not lost in the
timer's resolution), and the device is synchronised around each run on CUDA.

On CPU the allocator is settled first (`settle_allocator`). glibc serves a block at or above its
mmap threshold with fresh pages from the kernel, and raises the threshold to the size of each such
block freed, up to 32 MiB. A network's first pass frees large activations, so from then on its
outputs come from memory already mapped. An op called alone in a loop frees and asks again for the
same size, which stays at the threshold, so every call pays for fresh pages: a 1×1 conv at
224×224 timed 14 ms alone and 2 ms inside a network before this step.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from rich.console import Console
from rich.progress import Progress

from ...base import files
from ...base.device_key import DeviceKey
from ..device import cpu_model, device_name
from .lock import cache_dir, timing
from .trace import Op

METHOD = 8       # bump when how ops are measured changes: every cached table is then rebuilt
WARMUP = 3
REPEATS = 5
MIN_RUN_S = 1e-3
SETTLE_BYTES = 31 << 20  # just under glibc's ceiling on the dynamic mmap threshold (32 MiB on 64-bit)
COLD_BYTES = 48 << 20  # more than this CPU's 32 MiB last-level cache: an op's tensors cycle through this much
PROGRESS_FROM = 20  # new ops that earn a progress bar
STDERR = Console(stderr=True)  # progress goes to stderr, so `--json` output stays clean
CLOCK = time.perf_counter  # wall time; benchmarks/latency.py --clock thread swaps in the thread's CPU time
ESTIMATOR = statistics.median  # of the timed runs; benchmarks/latency.py --estimator min swaps in the fastest
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


CUDA_HOST_THREADS = 1  # a CUDA key's: the host only launches kernels, from one thread


def key_here(device: str = "cpu", threads: int | None = None, dtype: str = "float32", batch: int = 1) -> DeviceKey:
    """This machine's key for `device` (`cuda:N`: GPU N's name); on CPU `threads` defaults to torch's
    current intra-op thread count; a CUDA key counts none (CUDA_HOST_THREADS), whoever asks."""
    if device.startswith("cuda"):
        return DeviceKey("cuda", device_name(device), torch.__version__, CUDA_HOST_THREADS, METHOD, dtype, batch,
                         host=cpu_model())
    return DeviceKey("cpu", device_name(device), torch.__version__, threads or torch.get_num_threads(), METHOD,
                     dtype, batch)


def table_file(key: DeviceKey) -> Path:
    return cache_dir() / f"{key.device}-{key.digest()}.json"


def settle_allocator() -> None:
    """Raise glibc's mmap threshold to its ceiling (32 MiB), as a network's first pass does (see above)."""
    block = torch.empty(SETTLE_BYTES, dtype=torch.uint8)
    del block  # freed at once: what counts is that glibc saw a block this large come back


def time_call(call: Callable[[], object], device: torch.device | str) -> float:
    """Median seconds per call of `call`, as the module docstring says."""
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(WARMUP):
        call()
    sync()
    start = CLOCK()
    call()
    sync()
    once = max(CLOCK() - start, 1e-7)
    inner = max(1, int(MIN_RUN_S / once))
    runs = []
    for _ in range(REPEATS):
        start = CLOCK()
        for _ in range(inner):
            call()
        sync()
        runs.append((CLOCK() - start) / inner)
    return ESTIMATOR(runs)


class Table:
    """Op key -> measured milliseconds on one device key, plus the fitted overheads (model.py).
    New ops are timed on `on` (default: the key's kind, i.e. GPU 0 on CUDA): `cuda:N` for a process
    on GPU N, whose name the key holds."""

    def __init__(self, key: DeviceKey, path: Path | None = None, on: torch.device | None = None):
        self.key, self.path = key, path or table_file(key)
        self.on = torch.device(on or key.device)
        self.ops: dict[str, float] = {}
        self.overhead: dict[str, float] | None = None
        self._read()

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # none yet, or unreadable: measured again
        if not isinstance(data, dict) or data.get("key") != self.key.stored():
            return  # another device, torch, thread count or method: stale
        self.ops.update({k: float(v) for k, v in data.get("ops", {}).items()})
        self.overhead = self.overhead or data.get("overhead")

    def save(self) -> None:
        mine = dict(self.ops)
        self._read()  # keep what other processes measured meanwhile
        self.ops.update(mine)
        text = json.dumps({"key": self.key.stored(), "overhead": self.overhead, "ops": self.ops}, indent=0)
        files.write(self.path, text, "latency table", own=True)

    def missing(self, ops: Iterable[Op]) -> dict[str, Op]:
        return {op.key: op for op in ops if op.key not in self.ops}

    def measure(self, ops: Iterable[Op]) -> int:
        """Measure the ops not yet in the table, with a progress bar when there are many, alone on the
        machine (lock.timing); returns how many were new."""
        ops = list(ops)
        if not self.missing(ops):
            return 0
        with timing():
            self._read()  # what another process measured while this one waited
            new = list(self.missing(ops).values())
            if new:
                self._time(new)
        return len(new)

    def _time(self, new: list[Op]) -> None:
        device = self.on
        if device.type == "cpu":
            settle_allocator()
        with Progress(console=STDERR, transient=True,
                      disable=len(new) < PROGRESS_FROM or not STDERR.is_terminal) as bar, torch.inference_mode():
            task = bar.add_task(f"measuring {len(new)} new ops ({self.key.device})", total=len(new))
            for op in new:
                self.ops[op.key] = 1e3 * time_call(op.bind(device, COLD_BYTES), device)
                bar.advance(task)
        self.save()
