"""A network's latency: predicted from the lookup table, and measured for comparison.

    predicted = per_network + Σ_kind scale_kind × Σ_{ops of that kind} table[op] + per_op × (number of ops)

Every kernel the forward pass runs counts, each time it runs (trace.py), concatenations, adds and
pools included: they are ops of the table like any other. Branches count one after another, since
eager PyTorch runs them so (each op uses all the intra-op threads; branches never overlap). Measured
on this 2-core CPU while the table was designed: an op timed in a tight loop with its weights cycled
out of the cache comes within a few per cent of its time inside resnet50 for convs, but elementwise
ops (batch norm, ReLU, adds) take 1.5 to 3 times as long inside a network as in a loop on hot inputs
(cycling the inputs out of the cache and filling them with varied values narrow that, see trace.py),
and each op also pays the module call around it. So the terms are fitted, per device key, on
calibration networks (CALIBRATION_PER_SPACE seeded draws from every shipped space, a seed no
benchmark uses): the fixed cost of a forward pass,
one scale per kind of op (dense convs and linears; grouped and depthwise convs; memory-bound ops)
and a per-op overhead, by non-negative least squares on relative error against each network's
median over PASSES measurements. The fit is stored in the table's file, beside the ops.
"""
from __future__ import annotations

import contextlib
import random
import statistics
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from rich.progress import track
from scipy.optimize import nnls

import space
from space.sampling import load_space, sample, space_names

from .lock import timing
from .table import DTYPES, STDERR, DeviceKey, Table, time_call
from .trace import Op, distinct, trace

KINDS = ("conv", "grouped", "memory")
TERMS = ("per_network", *(f"scale_{k}" for k in KINDS), "per_op")
CALIBRATION_SEED, CALIBRATION_PER_SPACE = 10_000, 5
PASSES = 3  # rounds of measurements over a set of networks (calibration, benchmark), for the median of each
CALIBRATION_MAX_FLOPS = 4e9  # multiply-adds at 224 px: keeps the fit's measurements to a minute or two


def kind(op: Op) -> str:
    """conv: dense convs and linears (compute-bound); grouped: grouped and depthwise convs; memory: the rest."""
    name = op.key.split("(", 1)[0]
    if name == "linear":
        return "conv"
    if name != "conv2d":
        return "memory"
    groups = op.args[6] if len(op.args) > 6 else op.kwargs.get("groups", 1)
    return "conv" if groups == 1 else "grouped"


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run with `n` intra-op threads, as the table's key says, and restore the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def terms(ops: list[Op], table: Table) -> np.ndarray:
    """The model's inputs for one network: 1, the table's sum per kind (ms), the number of ops."""
    sums = dict.fromkeys(KINDS, 0.0)
    for op in ops:
        sums[kind(op)] += table.ops[op.key]
    return np.array([1.0, *sums.values(), float(len(ops))])


@dataclass
class Prediction:
    ms: float
    table_ms: float           # the plain sum of the ops' table entries
    ops: list[dict]           # each distinct op: its key, kind, how often it runs, ms per run


def network_ops(genotype, resolution: int, table: Table) -> list[Op]:
    """The genotype's ops, every one of them in the table (new ones measured now)."""
    ops = trace(genotype, resolution, table.key.batch, DTYPES[table.key.dtype])
    with threads(table.key.threads):
        table.measure(ops)
    return ops


def predict(genotype, resolution: int, table: Table) -> Prediction:
    ops = network_ops(genotype, resolution, table)
    fit = table.overhead or calibrate(table)
    x = terms(ops, table)
    ms = float(x @ np.array([fit[t] for t in TERMS]))
    unique, counts = distinct(ops)
    rows = [{"op": k, "kind": kind(op), "count": counts[k], "ms": table.ops[k]} for k, op in unique.items()]
    return Prediction(ms, float(x[1:1 + len(KINDS)].sum()), sorted(rows, key=lambda r: -r["ms"] * r["count"]))


def measure(genotype, resolution: int, key: DeviceKey, on: torch.device | None = None) -> float:
    """The built network's median forward time in ms on `on` (default: the key's kind), timed as the
    table times ops (random weights, eval mode, inference mode, alone on the machine)."""
    device = torch.device(on or key.device)
    dtype = DTYPES[key.dtype]
    net = space.build(genotype, num_classes=1000, resolution=resolution).to(device, dtype).eval()
    x = torch.rand(key.batch, 3, resolution, resolution, device=device, dtype=dtype)
    with timing(), threads(key.threads), torch.inference_mode():
        return 1e3 * time_call(lambda: net(x), device)


def draws(space_name: str, seed: int, n: int, max_flops: float, resolution: int = 224) -> list:
    """The first `n` genotypes drawn from a shipped space with `random.Random(seed)` that are valid at
    `resolution` and within `max_flops` multiply-adds there."""
    rng, doc, chosen = random.Random(seed), load_space(space_name), []
    while len(chosen) < n:
        g = sample(doc, rng)
        try:
            fits = space.complexity(g, resolution, 1000).flops <= max_flops
        except space.GenotypeError:
            continue
        if fits:
            chosen.append(g)
    return chosen


def calibration_networks() -> list:
    """CALIBRATION_PER_SPACE draws from every shipped space, seeded apart from any benchmark's."""
    return [g for name in space_names()
            for g in draws(name, CALIBRATION_SEED, CALIBRATION_PER_SPACE, CALIBRATION_MAX_FLOPS)]


def measure_passes(networks: list, resolution: int, key: DeviceKey, passes: int = PASSES,
                   on: torch.device | None = None) -> list[list[float]]:
    """Each network's measurement in `passes` rounds over all of them: a burst of load from the VM's
    neighbours (a single forward time on this CPU can jump by 40% for a second) then spoils one of a
    network's measurements, not all, and their median is kept."""
    rounds = [(i, g) for _ in range(passes) for i, g in enumerate(networks)]
    found: list[list[float]] = [[] for _ in networks]
    for i, g in track(rounds, f"timing {len(networks)} networks, {passes} passes", console=STDERR,
                      transient=True, disable=not STDERR.is_terminal):
        found[i].append(measure(g, resolution, key, on))
    return found


def calibrate(table: Table, networks: list | None = None, resolution: int = 224) -> dict[str, float]:
    """Fit the model's terms on this device (see the module docstring) and store them in the table.
    The defaults are what a prediction uses when its table has no fit yet; tests fit small networks."""
    networks = networks or calibration_networks()
    x = np.array([terms(network_ops(g, resolution, table), table) for g in networks])
    y = np.array([statistics.median(m) for m in measure_passes(networks, resolution, table.key, on=table.on)])
    coef, _ = nnls(x / y[:, None], np.ones(len(y)))  # relative error: every network weighs the same
    table.overhead = dict(zip(TERMS, map(float, coef)))
    table.save()
    return table.overhead
