"""Host overhead per trial in a large study: what a worker spends outside training, per trial.

    python benchmarks/host_overhead.py [--storage URL] [--trials 2000] [--measure 20] [--sampler nsga2]

Fills a fresh study with `--trials` COMPLETE trials shaped like a search's (20 parameters, a ~2 KB
genotype, a learning curve), then runs the claim protocol (explorer.scaleout.claim.work) for
`--measure` more trials whose objective returns at once, in this process as a new worker would. Each
trial's time is then all host overhead: the claim under the lock (counting complete and claimed trials),
the sampler's draw of 20 parameters, and recording the result. Prints the first trial's time (a new
worker reads the study once) and the median of the rest. The issue's target: under 50 ms per trial at
2,000 trials on PostgreSQL (give its URL with --storage; the default is SQLite in a scratch folder).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from explorer.scaleout.claim import work
from explorer.sweep.study import make_sampler

PARAMS = {f"p{i}": FloatDistribution(0, 1) for i in range(20)}


def filled(url: str, trials: int, sampler: str):
    study = optuna.create_study(study_name=f"overhead-{time.time_ns()}", storage=url,
                                directions=["maximize", "minimize"], sampler=make_sampler(sampler, 0))
    genotype = json.dumps({"stages": [{"blocks": [{"op": "conv", "out": 64 * i} for i in range(40)]}]})
    study.add_trials([create_trial(state=TrialState.COMPLETE, values=[0.5 + i / (4 * trials), 1e9 - i],
                                   params={k: 0.5 for k in PARAMS}, distributions=PARAMS,
                                   user_attrs={"genotype": genotype, "history": [0.4, 0.5], "flops": 1e9},
                                   intermediate_values={1: 0.4, 2: 0.5}) for i in range(trials)])
    return study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", help="an Optuna storage URL [default: SQLite in a scratch folder]")
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--measure", type=int, default=20)
    ap.add_argument("--sampler", default="nsga2")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.storage or f"sqlite:///{scratch}/study.db"
        started = time.perf_counter()
        study = filled(url, args.trials, args.sampler)
        print(f"{args.trials} trials stored in {time.perf_counter() - started:.0f} s ({url.split(':')[0]})", flush=True)
        study = optuna.load_study(study_name=study.study_name, storage=url, sampler=make_sampler(args.sampler, 0))
        stamps = [time.perf_counter()]
        work(study, lambda trial: (sum(trial.suggest_float(k, 0, 1) for k in PARAMS) / 20, 1e9),
             target=lambda: args.trials + args.measure,
             callbacks=[lambda study, frozen: stamps.append(time.perf_counter())])
    per_trial = [1e3 * (b - a) for a, b in zip(stamps, stamps[1:])]
    print(f"host overhead per trial at {args.trials} trials, {args.sampler} sampler: first {per_trial[0]:.0f} ms "
          f"(a new worker reads the study), then median {statistics.median(per_trial[1:]):.0f} ms, "
          f"max {max(per_trial[1:]):.0f} ms over {len(per_trial) - 1} trials")


if __name__ == "__main__":
    main()
