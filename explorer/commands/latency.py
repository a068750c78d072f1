"""`explore latency`: a genotype's predicted latency on this device, and its measured one beside it."""
from __future__ import annotations

import torch

import space

from ..base.errors import UserError
from ..trial import latency
from ..trial.trainer import resolve_device


def device_key(device: str, threads: int | None, batch: int, dtype: str = "float32"):
    """The lookup table's key for the flags and the device it times on (`auto` as `explore search` means
    it), or a one-line error naming the bad flag."""
    try:
        resolved = resolve_device(device)
    except ValueError as e:
        raise UserError(f"--device: {e}") from None
    if resolved.type == "cuda" and threads is not None:
        raise UserError("--threads: counts CPU threads, which time ops on --device cpu only; on CUDA the host "
                        "launches kernels from one thread")
    return latency.key_here(str(resolved), threads, dtype, batch), resolved


def latency_report(genotype, name: str, resolution: int, key: latency.DeviceKey, measured: bool = True,
                   on: torch.device | None = None) -> dict:
    """What `explore latency --json` prints: predicted and measured ms, and every distinct op, timed on
    `on` (default: the key's kind)."""
    table = latency.Table(key, on=on)
    prediction = latency.predict(genotype, resolution, table)
    return {"name": name, "resolution": resolution, "batch": key.batch, "device": key.short(),
            "threads": key.threads, "predicted_ms": round(prediction.ms, 3),
            "measured_ms": round(latency.measure(genotype, resolution, key, on), 3) if measured else None,
            "table_ms": round(prediction.table_ms, 3), "fit": table.overhead,
            "flops": space.complexity(genotype, resolution, 1000).flops, "flops_unit": "multiply-adds",
            "ops": prediction.ops}
