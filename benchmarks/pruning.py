"""Pareto pruning against none, on the same seed: trials per hour gained, hypervolume lost.

    python benchmarks/pruning.py [--trials 12] [--epochs 4] [--space residual] [--budget 2GFLOPs] [--prune-k 2]
                                 [--proxy-resolution 8] [--proxy-width 0.25] [--keep DIR]

Runs `explore search` twice in a scratch folder (digits, CPU unless --device),
once with `--prune none` and once with `--prune pareto`, both aiming for the same
number of completed trials, and prints them side by side:

- trials/hour: trained trials (completed + stopped early) per hour of search wall time;
- epochs/trial: proxy epochs actually trained per trained trial (device-independent);
- hypervolume: the area dominated by the completed trials' front in
  (log10 FLOPs, validation accuracy), reference point (budget, accuracy 0), the
  FLOPs axis spanning budget/1000 .. budget and scaled to [0, 1] (1.0 = a trial at
  <= budget/1000 FLOPs with accuracy 1); also at equal wall time, i.e. counting
  only the trials each run had completed when the faster of the two finished.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.base.budget import parse_flops  # noqa: E402
from explorer.commands import runner  # noqa: E402

DECADES = 3


def hypervolume(points: list[tuple[float, float]], budget: float) -> float:
    """Area dominated by (flops, accuracy) points, flops on a log axis over budget/10^DECADES .. budget."""
    hi, lo = math.log10(budget), math.log10(budget) - DECADES
    best, area, last_x = 0.0, 0.0, None
    for x, acc in sorted((min(hi, max(lo, math.log10(f))), a) for f, a in points if f <= budget):
        if last_x is not None:
            area += (x - last_x) * best
        best, last_x = max(best, acc), x
    if last_x is not None:
        area += (hi - last_x) * best
    return area / DECADES


def measure(name: str, prune: str, args, workdir: Path) -> dict:
    explicit = dict(budget=args.budget, space=args.space, dataset="digits", trials=args.trials, epochs=args.epochs,
                    proxy_resolution=args.proxy_resolution, proxy_width=args.proxy_width, seed=args.seed,
                    prune=prune, prune_k=args.prune_k)
    console = runner.Console(file=open(os.devnull, "w"))
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        started = time.perf_counter()
        runner.search_command(explicit, name, None, args.device, None, False, console)
        wall = time.perf_counter() - started
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/studies/{name}/study.db")
    finally:
        os.chdir(cwd)
    trials = study.get_trials(deepcopy=False)
    first = min(t.datetime_start for t in trials)
    trained = [t for t in trials if t.intermediate_values]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"wall": wall, "trained": len(trained), "completed": len(done),
            "stopped": sum("pruned_at_epoch" in t.user_attrs for t in trials),
            "epochs": sum(len(t.intermediate_values) for t in trained),
            "done_at": [((t.datetime_complete - first).total_seconds(), t.values[1], t.values[0]) for t in done]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--proxy-resolution", type=int, default=8,
                   help="8 px keeps digits accuracies apart (at 16 px most trials reach 1.0 on its 144 val images)")
    p.add_argument("--proxy-width", type=float, default=0.25)
    p.add_argument("--space", default="residual")
    p.add_argument("--budget", default="2GFLOPs")
    p.add_argument("--prune-k", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", type=Path, help="keep the two studies in KEEP/studies/ [default: a scratch folder]")
    args = p.parse_args()
    budget = parse_flops(args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep.resolve() if args.keep else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        runs = {mode: measure(f"bench-{mode}", mode, args, where) for mode in ("none", "pareto")}
    horizon = min(r["wall"] for r in runs.values())
    rows = [("wall time (s)", lambda r: f"{r['wall']:.0f}"),
            ("trained trials (completed + stopped)", lambda r: f"{r['trained']} ({r['completed']} + {r['stopped']})"),
            ("trials/hour", lambda r: f"{3600 * r['trained'] / r['wall']:.0f}"),
            ("completed trials/hour", lambda r: f"{3600 * r['completed'] / r['wall']:.0f}"),
            ("epochs/trained trial", lambda r: f"{r['epochs'] / r['trained']:.2f}"),
            ("hypervolume (completed)", lambda r: f"{hypervolume([(f, a) for _, f, a in r['done_at']], budget):.4f}"),
            (f"hypervolume at {horizon:.0f} s",
             lambda r: f"{hypervolume([(f, a) for s, f, a in r['done_at'] if s <= horizon], budget):.4f}")]
    print(f"digits at {args.proxy_resolution} px, proxy width {args.proxy_width}, space {args.space}, budget "
          f"{args.budget}, {args.trials} completed trials, {args.epochs} epochs, seed {args.seed}, prune-k "
          f"{args.prune_k}, device {args.device} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads)")
    print(f"{'':40s} {'--prune none':>16s} {'--prune pareto':>16s}")
    for label, fn in rows:
        print(f"{label:40s} {fn(runs['none']):>16s} {fn(runs['pareto']):>16s}")
    none, pareto = runs["none"], runs["pareto"]

    def hv(run, until=math.inf):
        return hypervolume([(f, a) for s, f, a in run["done_at"] if s <= until], budget)

    gained = (pareto["trained"] / pareto["wall"]) / (none["trained"] / none["wall"]) - 1
    lost = 1 - hv(pareto) / max(1e-12, hv(none))
    lost_now = 1 - hv(pareto, horizon) / max(1e-12, hv(none, horizon))
    print(f"pruning: {100 * gained:+.0f}% trials/hour; hypervolume lost {100 * lost:+.1f}% at the end "
          f"(negative: pruning's front is better), {100 * lost_now:+.1f}% at equal wall time ({horizon:.0f} s)")

if __name__ == "__main__":
    main()
