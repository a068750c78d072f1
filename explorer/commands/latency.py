"""`explore latency`: a genotype's predicted latency on this device, and its measured one beside it."""
from __future__ import annotations

import space

from ..base.errors import UserError
from ..trial import latency
from ..trial.trainer import resolve_device


def device_key(device: str, threads: int | None, batch: int, dtype: str = "float32") -> latency.DeviceKey:
    """The lookup table's key for the flags, or a one-line error naming the bad one."""
    try:
        resolved = resolve_device("cpu" if device == "auto" else device)
    except ValueError as e:
        raise UserError(f"--device: {e}") from None
    return latency.DeviceKey.here(resolved.type, threads, dtype, batch)


def latency_report(genotype, name: str, resolution: int, key: latency.DeviceKey, measured: bool = True) -> dict:
    """What `explore latency --json` prints: predicted and measured ms, and every distinct op."""
    table = latency.Table(key)
    prediction = latency.predict(genotype, resolution, table)
    return {"name": name, "resolution": resolution, "batch": key.batch, "device": key.short(),
            "threads": key.threads, "predicted_ms": round(prediction.ms, 3),
            "measured_ms": round(latency.measure(genotype, resolution, key), 3) if measured else None,
            "table_ms": round(prediction.table_ms, 3), "fit": table.overhead,
            "flops": space.complexity(genotype, resolution, 1000).flops, "flops_unit": "multiply-adds",
            "ops": prediction.ops}
