"""The key a latency table is stored under: what changes a kernel's speed on a device.

It lives in base/ so that a study's `Settings` can hold it typed; the layer that measures (explorer.trial.
latency) makes this machine's key (`key_here`) and names a table's file after it (`table_file`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class DeviceKey:
    device: str        # cpu or cuda
    name: str          # the model name of the CPU or GPU
    torch: str
    threads: int       # intra-op CPU threads; explorer.trial.latency.CUDA_HOST_THREADS on CUDA
    method: int        # the measuring method's version (explorer.trial.latency.table.METHOD)
    dtype: str = "float32"
    batch: int = 1
    host: str = ""     # CUDA: the CPU's model, which sets how fast eager PyTorch launches kernels at batch 1

    @classmethod
    def from_dict(cls, stored: dict) -> DeviceKey:
        """The key as a study or a table file holds it (a CPU key stored before `host` existed has none)."""
        return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})

    def short(self) -> str:
        """One line for messages: `cpu AMD EPYC, 2 threads, float32, batch 1, torch 2.x`."""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        where = f"{self.name} (host {self.host})" if self.host else f"{self.name}, {threads}"
        return f"{self.device} {where}, {self.dtype}, batch {self.batch}, torch {self.torch}"

    def stored(self) -> dict:
        """The key as its table's file holds it; a CPU key has no host (its name is the CPU), so CPU
        tables made before the host was keyed stay valid."""
        return {k: v for k, v in asdict(self).items() if k != "host" or v}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.stored(), sort_keys=True).encode()).hexdigest()[:16]
