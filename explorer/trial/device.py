"""What a device is to a study: its kind and name, the precision it trains in, and cuDNN's autotuner.

One definition of each, so the trainer, the latency tables and a study's stored settings agree:

- precision: bf16 autocast where the GPU computes bf16 natively (compute capability 8.0 and up:
  A100, H100, RTX 30xx on); fp16 autocast with a gradient scaler on older CUDA GPUs (V100, T4), where
  bf16 is emulated and slow; fp32 on CPU, where autocast would only add casts.
- cuDNN's autotuner (`cudnn.benchmark`) times every algorithm for each new conv shape, forward and
  both backward passes. A search trains a new architecture every trial, so on short proxies the
  tuning can cost as much as the training; it is off unless a study turns it on, and it is set only
  around one training run (`cudnn_benchmark`), never for the whole process: latency timing runs
  with it off, whatever the trials before chose.
"""
from __future__ import annotations

import contextlib
import platform
from typing import Iterator

import torch

from ..base.settings import PRECISIONS

BF16_NATIVE_FROM = (8, 0)  # compute capability: Ampere and later have bf16 tensor cores
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision_for(device: torch.device) -> str:
    """The precision a proxy trains in on `device` (see the module docstring)."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device) >= BF16_NATIVE_FROM else "fp16"


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device | str) -> str:
    """The GPU's name for a CUDA device (the one its index names), else the CPU's model."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def device_settings(device: torch.device) -> dict:
    """What a study stores of the device its trials train on: kind, name and precision."""
    return {"device": device.type, "device_name": device_name(device), "precision": precision_for(device)}


def autocast(device: torch.device, precision: str):
    """Mixed precision for the forward pass, as `precision` says (fp32: none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling, which fp16's narrow range needs (bf16 has fp32's range); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


@contextlib.contextmanager
def cudnn_benchmark(on: bool) -> Iterator[None]:
    """cuDNN's autotuner on or off for the block, restored after it."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
