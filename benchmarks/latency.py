"""How well the latency lookup table predicts measured latency, in one run, on this machine.

    python benchmarks/latency.py [--threads N] [--clock wall|thread] [--estimator median|min]
                                 [--per-space 3] [--max-gflops 6] [--json F]

Genotypes: every named classic that runs at 224 px, plus `--per-space` seeded draws (seed 0, never the
calibration's) from every shipped space, within `--max-gflops` multiply-adds. Batch 1, 224 px, float32.

First the cost of a fresh device: a new, empty table (a temporary cache) is fitted (calibration) and
filled for 20 draws of the default search (`explore search --budget 2GFLOPs`: the union space within
2 GFLOPs). Then every genotype is predicted, and measured in three rounds over all of them (a burst of
load from the virtual machine's neighbours then spoils one of a genotype's measurements, not all):
its measured latency is the median of its three. Printed: each genotype's prediction beside that, the
share predicted within ±10%, the worst error, Kendall's tau of predicted against measured latency,
Kendall's tau of FLOPs against measured latency (what FLOPs miss), and how often one measurement lands
within ±10% of its genotype's median (what a check against a single measurement could score).
`uptime` is printed before and after: other load on the cores makes every measured figure noisier.
`--clock thread` (with `--threads 1`) times ops and networks alike by the CPU time of the one thread
instead of wall time: on a machine other jobs keep busy, that leaves out the time the scheduler gives
them, so the figures measure the predictor rather than the load (it is not latency on a busy
machine, which no prediction can know).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau

import space
from explorer.trial.latency import Table, calibrate, key_here, predict, table_file
from explorer.trial.latency import table as table_module
from explorer.trial.latency.model import draws, measure_passes
from space.named import named, names
from space.sampling import space_names

DEFAULT_SEARCH_DRAWS = 20


def genotypes(per_space: int, max_flops: float) -> list[tuple[str, object]]:
    chosen = []
    for name in names():
        try:
            space.complexity(named(name), 224, 1000)
        except space.GenotypeError:
            continue
        chosen.append((name, named(name)))
    for space_name in space_names():
        chosen += [(f"{space_name}#{i}", g) for i, g in enumerate(draws(space_name, 0, per_space, max_flops))]
    return chosen


def fresh_device_cost(table: Table) -> tuple[float, float, int]:
    """Seconds to fit an empty table, seconds to fill it for the default search's draws, ops measured."""
    start = time.perf_counter()
    calibrate(table)
    fitted = time.perf_counter()
    for g in draws("union", 0, DEFAULT_SEARCH_DRAWS, 2e9):
        predict(g, 224, table)
    return fitted - start, time.perf_counter() - fitted, len(table.ops)


def repeatability(rows: list[dict]) -> None:
    """How far one measurement strays from the median of the network's three: what a prediction checked
    against a single measurement here could not do better than."""
    singles = [abs(m / r["measured_ms"] - 1) for r in rows for m in r["passes_ms"]]
    agree = sum(e <= 0.1 for e in singles)
    print(f"one measurement within ±10% of its network's median: {agree}/{len(singles)} "
          f"({agree / len(singles):.0%}); worst {max(singles):.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--per-space", type=int, default=3)
    ap.add_argument("--max-gflops", type=float, default=6.0)
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall")
    ap.add_argument("--estimator", choices=("median", "min"), default="median",
                    help="of each measurement's timed runs, ops and networks alike (the tool uses the median)")
    ap.add_argument("--json", default=None, help="also write every row here")
    args = ap.parse_args()
    if args.clock == "thread":
        if args.threads != 1:
            ap.error("--clock thread needs --threads 1: one thread's CPU time is the latency only then")
        table_module.CLOCK = time.thread_time
    table_module.ESTIMATOR = {"median": statistics.median, "min": min}[args.estimator]
    key = key_here("cpu", threads=args.threads)
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"device: {key.short()}; clock: {args.clock}; estimator: {args.estimator}")
    cache = tempfile.TemporaryDirectory()  # a fresh device: nothing cached counts
    table = Table(key, Path(cache.name) / table_file(key).name)
    fit_s, fill_s, ops = fresh_device_cost(table)
    print(f"fresh device: fit {fit_s:.0f} s, then {ops} ops for {DEFAULT_SEARCH_DRAWS} default-search draws "
          f"{fill_s:.0f} s; total {(fit_s + fill_s) / 60:.1f} min")
    chosen = genotypes(args.per_space, args.max_gflops * 1e9)
    predicted = [predict(g, 224, table).ms for _, g in chosen]
    passes = measure_passes([g for _, g in chosen], 224, key)  # as the calibration measures: PASSES rounds
    rows = []
    print(f"{'genotype':28s} {'GFLOPs':>7s} {'M params':>8s} {'measured':>9s} {'predicted':>9s} {'error':>7s}")
    for (name, g), p, m in zip(chosen, predicted, passes):
        cx = space.complexity(g, 224, 1000)
        rows.append({"name": name, "classic": "#" not in name, "flops": cx.flops, "params": cx.params,
                     "measured_ms": statistics.median(m), "predicted_ms": p, "passes_ms": m})
        print(f"{name:28s} {cx.flops / 1e9:7.2f} {cx.params / 1e6:8.2f} {rows[-1]['measured_ms']:9.2f} {p:9.2f} "
              f"{p / rows[-1]['measured_ms'] - 1:+7.1%}", flush=True)
    errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in rows]
    measured = [r["measured_ms"] for r in rows]
    print(f"\n{len(rows)} genotypes; within ±10%: {sum(e <= 0.1 for e in errors)}/{len(rows)} "
          f"({sum(e <= 0.1 for e in errors) / len(rows):.0%}); worst error {max(errors):.1%}")
    repeatability(rows)
    print(f"Kendall tau, predicted vs measured: {kendalltau([r['predicted_ms'] for r in rows], measured)[0]:.3f}")
    print(f"Kendall tau, FLOPs (multiply-adds) vs measured: {kendalltau([r['flops'] for r in rows], measured)[0]:.3f}")
    print("fit:", json.dumps(table.overhead))
    print("uptime after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"key": vars(key), "rows": rows, "fit": table.overhead}, f, indent=1)


if __name__ == "__main__":
    main()
