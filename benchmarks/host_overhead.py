"""Host overhead per trial in a large study: what a worker spends outside training, per trial.

    python benchmarks/host_overhead.py [--storage URL | --postgres] [--trials 2000] [--measure 20] [--sampler nsga2]

Fills a fresh study with `--trials` COMPLETE trials shaped like a search's (20 parameters, a ~2 KB
genotype, a learning curve), then three new workers (each loads the study) run `--measure` trials each
through the claim protocol (explorer.scaleout.claim.work, with heartbeats as a worker on a database has
them), a trial each in turn so that a change in the machine's load hits them alike, in three ways:

* draw: the objective draws 20 floats and returns at once;
* one by one: a search trial's storage writes, training left out: the draw, its 17 attributes before
  training, two epochs' intermediate values with a `--prune pareto` check after the first, and 5
  attributes after training, each attribute written by its own `Trial.set_user_attr` (as before);
* batched: the same, each group of attributes written in one transaction (explorer.studies.internals
  .set_user_attrs, what a search does now).

Each trial's time is host overhead: the claim under the lock (counting complete and claimed trials), the
sampler's draw, the writes, recording the result. Prints, per way, the first trial's time (a new worker
reads the study once) and the median of the rest, with the client's CPU time and SQL statements per
trial, and the median by phase: the claim (with Optuna's study.ask), the draw, the attributes, the
epochs' values, the pruning checks and study.tell. The issue's target: a claim or pruning check under
50 ms per trial at 2,000 trials on PostgreSQL (`--postgres` starts a throwaway server on loopback,
tests/conftest.py's; the default is SQLite in a scratch folder).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from explorer.scaleout.claim import DEFAULT_HEARTBEAT, work
from explorer.studies import internals
from explorer.studies.storage import open_storage
from explorer.sweep import pruning
from explorer.sweep.study import make_sampler

PARAMS = {f"p{i}": FloatDistribution(0, 1) for i in range(20)}
GENOTYPE = json.dumps({"stages": [{"blocks": [{"op": "conv", "out": 64 * i} for i in range(40)]}]})
# What a search trial records before training (explorer.trial.candidate.trial_attrs) and after it.
BEFORE = {"genotype": GENOTYPE, "digest": "0" * 16, "family": "custom", "depth": 20, "width": 64,
          "cardinality": 1, "growth": 0, "kernels": "3", "separable": False, "residual": True, "flops": 10 ** 9,
          "params": 10 ** 6, "proxy_genotype": GENOTYPE, "proxy_flops": 10 ** 7, "proxy_params": 10 ** 5,
          "dataset": "fashion-mnist", "device": "cpu"}
EPOCHS = 2


def filled(url: str, trials: int, sampler: str) -> str:
    study = optuna.create_study(study_name=f"overhead-{time.time_ns()}", storage=url,
                                directions=["maximize", "minimize"], sampler=make_sampler(sampler, 0))
    study.add_trials([create_trial(state=TrialState.COMPLETE, values=[0.5 + i / (4 * trials), 1e9 - i],
                                   params={k: 0.5 for k in PARAMS}, distributions=PARAMS,
                                   user_attrs={"genotype": GENOTYPE, "history": [0.4, 0.5], "flops": 1e9},
                                   intermediate_values={1: 0.4, 2: 0.5}) for i in range(trials)])
    return study.study_name


def one_by_one(trial, attrs: dict) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def objective(record, mark):
    """A trial's storage traffic with training left out; `record` writes a group of attributes, or None: draw
    only. `mark(phase)` is called as each phase ends, so the trial's time splits into phases."""
    def run(trial):
        mark("claim")
        accuracy = sum(trial.suggest_float(k, 0, 1) for k in PARAMS) / 20
        mark("draw")
        if record:
            record(trial, {**BEFORE, "flops": BEFORE["flops"] - trial.number})  # cheaper than any before: never pruned
            mark("attributes")
            for epoch in range(1, EPOCHS + 1):
                internals.report(trial, epoch, accuracy)
                mark("epoch values")
                pruning.check(trial, epoch, EPOCHS, accuracy)
                mark("pruning check")
            record(trial, {"wall_time": 0.1, "history": [accuracy] * EPOCHS, "accuracy": accuracy,
                           "val_images": 1000, "train_images_per_s": 1e4})
            mark("attributes")
        return accuracy, 1e9
    return run


class Worker:
    """A new worker on the study (its own storage and cache), whose trials write as `record` does."""

    def __init__(self, url: str, name: str, sampler: str, record):
        self.study = optuna.load_study(study_name=name, storage=open_storage(url, DEFAULT_HEARTBEAT),
                                       sampler=make_sampler(sampler, 0))
        self.objective = objective(record, self.mark)
        self.statements, self.marks = 0, []
        sqlalchemy.event.listen(internals.rdb_backend(self.study).engine, "before_cursor_execute", self._count)

    def _count(self, *args):
        self.statements += 1

    def mark(self, phase: str) -> None:
        self.marks.append((phase, time.perf_counter(), time.process_time(), self.statements))

    def trial(self, target: int) -> dict[str, tuple[float, float, int]]:
        """One more trial, up to `target` completed: wall and CPU seconds and SQL statements, claim to result,
        in all ("trial") and by phase (the claim and Optuna's study.ask, the draw, ..., study.tell)."""
        self.marks = []
        self.mark("start")
        work(self.study, self.objective, target=lambda: target, callbacks=[lambda study, frozen: self.mark("tell")])
        spent = {"trial": tuple(b - a for a, b in zip(self.marks[0][1:], self.marks[-1][1:]))}
        for (_, *before), (phase, *after) in zip(self.marks, self.marks[1:]):
            spent[phase] = tuple(s + b - a for s, a, b in zip(spent.get(phase, (0, 0, 0)), before, after))
        return spent


def summary(first: dict, steady: list[dict]) -> str:
    wall, cpu, sql = (statistics.median(column) for column in zip(*(t["trial"] for t in steady)))
    phases = ", ".join(f"{phase} {1e3 * statistics.median(t[phase][0] for t in steady):.0f} ms "
                       f"({statistics.median(t[phase][2] for t in steady):.0f})"
                       for phase in steady[0] if phase != "trial")
    return (f"first {1e3 * first['trial'][0]:.0f} ms (a new worker reads the study), then median {1e3 * wall:.0f} ms "
            f"(max {1e3 * max(t['trial'][0] for t in steady):.0f}; client CPU {1e3 * cpu:.0f} ms, {sql:.0f} SQL "
            f"statements)\n{'':14}by phase, median (SQL statements): {phases}")


def measure(url: str, name: str, sampler: str, target: int, trials: int) -> None:
    """The three ways, a trial each in turn, so that a change in the machine's load hits them alike."""
    ways = {"draw": None, "one by one": one_by_one, "batched": internals.set_user_attrs}
    workers = {way: Worker(url, name, sampler, record) for way, record in ways.items()}
    first, steady = {}, {way: [] for way in ways}
    for way, worker in workers.items():
        target += 1
        first[way] = worker.trial(target)
    for _ in range(trials):
        for way, worker in workers.items():
            target += 1
            steady[way].append(worker.trial(target))
    for way in ways:
        print(f"  {way:>10}: {summary(first[way], steady[way])}", flush=True)


def throwaway_postgres():
    """A PostgreSQL server on loopback as the tests start one (tests/conftest.py)."""
    spec = importlib.util.spec_from_file_location("conftest", Path(__file__).parents[1] / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    server = conftest.Postgres(conftest.pg_bin())
    server.start()
    return server, server.create_database("overhead")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", help="an Optuna storage URL [default: SQLite in a scratch folder]")
    ap.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL server on loopback")
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--measure", type=int, default=20)
    ap.add_argument("--sampler", default="nsga2")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    server, url = throwaway_postgres() if args.postgres else (None, args.storage)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            url = url or f"sqlite:///{scratch}/study.db"
            started = time.perf_counter()
            name = filled(url, args.trials, args.sampler)
            print(f"{args.trials} trials stored in {time.perf_counter() - started:.0f} s ({url.split(':')[0]}); "
                  f"host overhead per trial, {args.sampler} sampler, {args.measure} trials each:", flush=True)
            measure(url, name, args.sampler, args.trials, args.measure)
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
