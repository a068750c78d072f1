"""The kernels a network runs, with their shapes, found without computing anything.

The network is built on PyTorch's meta device (no weights are allocated or initialised) and run once
under a `TorchFunctionMode` that records each top-level torch call: every conv, norm, activation,
pool, add, concat, split, permute and linear the forward pass makes, including the functional ones
(residual adds, concatenations) that are no module of their own. A call's key names the function and
its arguments (tensor shapes, strides where not contiguous, scalars), so equal kernels share one
entry of the lookup table. This is the one place that walks a network; it needs only `space.build`.
Why not `space.trace`, the genotype's own walk: a latency table prices kernels, and this sees the
kernels themselves, the ones no genotype op names included (a LayerNorm2d's permutes, a sum merge's
stack and sum, a highway gate's sigmoid and multiplies), exactly as the built network runs them.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import space

MAX_COPIES = 16  # of an op's tensors, when measuring it cold
# Calls that launch no kernel: shape queries, and the input tensor the trace makes.
FREE = frozenset({"Tensor.dim", "Tensor.size", "Tensor.__len__", "Tensor.__hash__", "empty"})


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...] | None  # None: contiguous
    dtype: torch.dtype
    weight: bool = False  # a parameter or buffer (a module's state): read once per forward pass, so cold in the cache

    def __repr__(self) -> str:
        text = "x".join(map(str, self.shape))
        return f"T[{text}/{','.join(map(str, self.stride))}]" if self.stride else f"T[{text}]"

    def make(self, device: torch.device) -> torch.Tensor:
        """A tensor of this shape and layout filled with seeded uniform values, as varied as a network's:
        max pooling ran 2.8 times faster on a tensor of one repeated value (its comparisons never
        mispredict) than on varied data. Activations lie in [-1, 1); a module's state, its parameters
        and buffers alike, in [0.5, 1.5), so a batch norm's running variance is positive (a negative
        one made the timed op return NaN). Neither range can produce denormals or NaNs to slow a
        kernel down, and the global random state is left alone."""
        if self.stride is None:
            t = torch.empty(self.shape, dtype=self.dtype, device=device)
        else:
            t = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=device)
        if not t.is_floating_point():
            return t.zero_()
        low, high = (0.5, 1.5) if self.weight else (-1.0, 1.0)
        return t.uniform_(low, high, generator=torch.Generator(device).manual_seed(0))

    def bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclasses.dataclass(frozen=True)
class Op:
    """One kernel call: `func(*args, **kwargs)` with TensorSpecs where tensors were."""
    key: str
    func: Callable
    args: tuple
    kwargs: dict

    def bind(self, device: torch.device, cold_bytes: int = 0) -> Callable[[], Any]:
        """A zero-argument call of the op on fresh tensors on `device`. With `cold_bytes`, successive
        calls cycle through copies of all its tensors, weights and inputs, filling that many bytes
        (at most MAX_COPIES copies), so a large op reads them from memory, as in a network, which reads
        each weight once per pass and whose other ops have evicted most activations meanwhile. With
        only the weights cold (inputs shared and hot), memory-bound ops were timed faster than inside
        networks, and the latency benchmark scored 85% within ±10% at one thread; with both, 87% (method 6)."""
        tensor_bytes = sum(t.bytes() for t in _tensors((self.args, self.kwargs)))
        copies = min(MAX_COPIES, max(1, -(-cold_bytes // max(1, tensor_bytes))))
        calls = []
        for _ in range(copies):
            shared: dict[int, torch.Tensor] = {}  # within a call, one input passed twice stays one tensor
            calls.append((_materialise(self.args, device, shared), _materialise(self.kwargs, device, shared)))
        turn = itertools.cycle(calls)

        def call():
            args, kwargs = next(turn)
            return self.func(*args, **kwargs)
        return call


def _spec(value, state: frozenset[int]):
    """TensorSpecs in place of tensors; `state` holds the ids of the network's parameters and buffers."""
    if isinstance(value, torch.Tensor):
        stride = None if value.is_contiguous() else tuple(value.stride())
        return TensorSpec(tuple(value.shape), stride, value.dtype, id(value) in state)
    if isinstance(value, (list, tuple)):
        return type(value)(_spec(v, state) for v in value)
    if isinstance(value, dict):
        return {k: _spec(v, state) for k, v in value.items()}
    return value


def _materialise(value, device: torch.device, shared: dict):
    """Real tensors for the specs in `value`; non-weights are made once and kept in `shared`."""
    if isinstance(value, TensorSpec):
        if value.weight:
            return value.make(device)
        if id(value) not in shared:
            shared[id(value)] = value.make(device)
        return shared[id(value)]
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(v, device, shared) for v in value)
    if isinstance(value, dict):
        return {k: _materialise(v, device, shared) for k, v in value.items()}
    return value


def _tensors(value):
    if isinstance(value, TensorSpec):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def name_of(func: Callable) -> str:
    qualname = getattr(func, "__qualname__", "")
    name = getattr(func, "__name__", repr(func))
    return f"Tensor.{name}" if qualname.startswith(("TensorBase.", "Tensor.")) else name


class _Recorder(TorchFunctionMode):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.ops: list[Op] = []
        self.state = frozenset(map(id, [*net.parameters(), *net.buffers()]))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = name_of(func)
        if name not in FREE and not name.startswith("__get__"):
            args_spec, kwargs_spec = _spec(args, self.state), _spec(kwargs, self.state)
            key = f"{name}({', '.join(map(repr, args_spec))}"
            key += "".join(f", {k}={v!r}" for k, v in sorted(kwargs_spec.items())) + ")"
            self.ops.append(Op(key, func, args_spec, kwargs_spec))
        return func(*args, **kwargs)


def trace(genotype, resolution: int, batch: int = 1, dtype: torch.dtype = torch.float32) -> list[Op]:
    """The ops of the genotype's eval-mode forward pass at `resolution` and `batch`, in order
    (1000 classes, as budgets are priced)."""
    with torch.device("meta"):
        net = space.build(genotype, num_classes=1000, resolution=resolution).to(dtype).eval()
        x = torch.empty(batch, 3, resolution, resolution, dtype=dtype)
    recorder = _Recorder(net)
    with torch.inference_mode(), recorder:
        net(x)
    return recorder.ops


def distinct(ops: list[Op]) -> tuple[dict[str, Op], Counter]:
    """Each distinct op once, and how often each runs."""
    return {op.key: op for op in ops}, Counter(op.key for op in ops)
