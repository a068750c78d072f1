"""Design-space refinement, the whole loop: is the refined space better, at equal trials?

    python benchmarks/refine.py [--trials 500] [--space union] [--budget 2GFLOPs] [--dataset fashion-mnist]
                                [--sampler random] [--seed 0] [--jobs 2] [--keep DIR] [--out refine.json]
    python benchmarks/refine.py --quick     # digits, 8 px, 1 epoch, 20 trials of residual: checks the loop runs

1. `explore search` the space under the budget for N completed trials (seed S), default proxy;
2. `explore refine` it (bootstrap seed S);
3. search the refined space for N fresh completed trials with seed S + 1;
4. `explore compare` the two: FLOP-normalised error EDFs, KS statistic and p-value, verdict.

The claim tested: the refined space's error EDF dominates the original's with KS p < 0.05 at equal trials.
Also reported, over each study's first K completed trials (K: the smaller count): the best proxy accuracy
and the hypervolume of (accuracy, FLOPs) in the box [0, 1] x [0, budget] (explorer.analysis.figures,
the report's). Both searches sample at random by default (`--sampler random`): NDS compares spaces by
samples of them, not by where a sampler steered.

N = 500 (NDS's models per space): the default proxy trains in 11.5 CPU s per trial on one thread
(benchmarks/RESULTS.md, fidelity), so 500 trials take about 48 min of wall time with --jobs 2 on 2 cores,
leaving room for rejected draws, start-up and neighbours on shared cores inside 90 minutes. Each search's
wall time is printed and saved, so the run itself checks it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analysis import axes, compare, refine  # noqa: E402
from explorer.analysis.figures import hypervolume  # noqa: E402
from explorer.base.budget import parse_flops  # noqa: E402
from explorer.base.errors import UserError  # noqa: E402
from explorer.commands import runner  # noqa: E402

# residual: one family, so its parameters reach PARAM_MIN_TRIALS in a few trials (a dozen union trials spread over
# eight families leave nothing to narrow)
QUICK = {"dataset": "digits", "trials": 20, "epochs": 1, "proxy_resolution": 8, "proxy_width": 0.25, "min_trials": 10,
         "budget": "2GFLOPs", "space": "residual"}


def search(name: str, space: str, seed: int, args, console: Console) -> float:
    explicit = dict(budget=args.budget, space=space, dataset=args.dataset, trials=args.trials, seed=seed,
                    sampler=args.sampler)
    explicit.update({k: getattr(args, k) for k in ("epochs", "proxy_resolution", "proxy_width")
                     if getattr(args, k) is not None})
    started = time.perf_counter()
    runner.search_command(explicit, name, None, args.device, None, False, console, jobs=args.jobs)
    return time.perf_counter() - started


def at_equal_trials(name: str, k: int, budget: float) -> dict:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///studies/{name}/study.db")
    done = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                  key=lambda t: t.number)[:k]
    points = [(t.values[0], int(t.user_attrs.get("flops", t.values[1]))) for t in done]
    return {"trials": len(done), "best_accuracy": max(a for a, _ in points),
            "hypervolume": hypervolume(points, budget)}


def completed_count(name: str) -> int:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///studies/{name}/study.db")
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def loop(args, console: Console) -> dict:
    walls = {"original": search("original", args.space, args.seed, args, console)}
    _, settings, samples = axes.open_samples("original", None, args.min_trials)
    analysis = axes.analyse("original", samples, args.seed)
    try:
        reasons = refine.write_refined(Path("refined.yaml"), "original", settings, analysis, force=True)
    except UserError as e:  # an outcome too: the study gave no evidence to narrow on
        return {"refused": str(e), "wall_s": walls}
    walls["refined"] = search("refined", "refined.yaml", args.seed + 1, args, console)
    groups, _, verdicts, notes = compare.compare(["original", "refined"], None)
    v = verdicts[0]
    k = min(completed_count("original"), completed_count("refined"))
    budget = parse_flops(args.budget)
    return {"narrowed": reasons, "refined_space": Path("refined.yaml").read_text(), "wall_s": walls,
            "ks": v.d, "p": v.p, "better": v.better, "dominates": v.dominates,
            "claim_holds": v.better == "refined" and v.dominates and v.p is not None and v.p < 0.05,
            "verdict": v.line({g.label: g for g in groups}), "notes": notes,
            "at_equal_trials": {name: at_equal_trials(name, k, budget) for name in ("original", "refined")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=500)
    p.add_argument("--space", default="union")
    p.add_argument("--budget", default="2GFLOPs")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--sampler", default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, help="[default: the default proxy's]")
    p.add_argument("--proxy-resolution", type=int, help="[default: the default proxy's]")
    p.add_argument("--proxy-width", type=float, help="[default: the default proxy's]")
    p.add_argument("--min-trials", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="a check that the loop runs: " + json.dumps(QUICK))
    p.add_argument("--keep", type=Path, help="run in KEEP (studies/, refined.yaml) [default: a scratch folder]")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    console = Console(file=open(os.devnull, "w"))
    out = args.out.resolve() if args.out else None
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep.resolve() if args.keep else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        here = os.getcwd()
        os.chdir(where)
        try:
            result = loop(args, console)
        finally:
            os.chdir(here)
    result["conditions"] = {**{k: v for k, v in vars(args).items() if k not in ("keep", "out")},
                            "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
                            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    report(result)
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")


def report(result: dict) -> None:
    c = result["conditions"]
    print(f"{c['space']} under {c['budget']} (multiply-adds) on {c['dataset']}, {c['trials']} trials per search, "
          f"sampler {c['sampler']}, seeds {c['seed']} and {c['seed'] + 1}; {c['machine']}, {c['date']}")
    if "refused" in result:
        print(f"original search {result['wall_s']['original'] / 60:.1f} min; refine refused: {result['refused']}")
        return
    print("narrowed:\n  " + "\n  ".join(result["narrowed"]))
    for name in ("original", "refined"):
        e = result["at_equal_trials"][name]
        print(f"{name:9s} search {result['wall_s'][name] / 60:6.1f} min; first {e['trials']} completed trials: "
              f"best accuracy {e['best_accuracy']:.4f}, hypervolume {e['hypervolume']:.4f}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(result["verdict"])
    holds = "holds" if result["claim_holds"] else "fails"
    print(f"claim (the refined space's error EDF dominates, KS p < 0.05): {holds}")


if __name__ == "__main__":
    main()
