"""The ground truth that proxies are scored against, sharing none of their choices but the geometry.

`python benchmarks/fidelity.py truth` runs it. Each genotype is adapted by the proxy's geometric
rules only (stem strides to 1 and the stride clamp, without which ImageNet networks vanish at
28 px) and trained at the native 28 px, width x1, repeats capped at 2 (a genotype's own where
smaller), TRUTH.epochs epochs on TRUTH.train_images training images, and evaluated on a fixed
class-balanced split of VAL_IMAGES images held out of the training split (split seed 0, whatever the
training seed). The genotypes (plan.json, made once and never rewritten) are:
- the classics under 2 GFLOPs (multiply-adds) that the union space contains;
- GOOD genotypes from the good region: the best, by non-dominated sorting on (proxy accuracy,
  FLOPs), of a default-seed `explore search` of the union space (--pool);
- seeded union draws, round-robin over the families, up to at least GENOTYPES in all.
The good region trains with two seeds, the rest with one. Each run writes its own JSON beside the
plan as it finishes, and a checkpoint after each epoch until then, so the work resumes where it
stopped, mid-run included, and splits into parts (--minutes);
fidelity-truth.json is assembled from whatever runs exist and says whether it is complete.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import optuna
import torch

import space
from explorer.analysis.pareto import stored_genotype
from explorer.base.dominance import sorted_by_fronts
from explorer.base.settings import ProxySpec, Settings
from explorer.sweep.study import reference_points
from explorer.trial import data as datasets
from explorer.trial.candidate import DEPLOY_CLASSES, trial_seed
from explorer.trial.proxy import make_proxy
from explorer.trial.trainer import Diverged, train
from space.named import named
from space.sampling import load_space, sample

HERE = Path(__file__).resolve().parent
RUNS = HERE / "fidelity-truth"
BUDGET = 2_000_000_000
DATASET = "fashion-mnist"
TRUTH = ProxySpec(resolution=28, width=1.0, depth=2, epochs=6, train_images=20_000, batch_size=128)
VAL_IMAGES = 10_000
SPLIT_SEED = 0
GOOD = 16
GENOTYPES = 32
SEEDS = {"good": (0, 1), "classic": (0,), "draw": (0,)}


def plan(pool: str | None) -> list[dict]:
    """The stored plan, or a new one (which needs the pool study)."""
    path = RUNS / "plan.json"
    if path.exists():
        return json.loads(path.read_text())["genotypes"]
    if pool is None:
        raise SystemExit("no plan yet: pass --pool STORAGE_URL, a default-seed `explore search` of the union space")
    union = load_space("union")
    settings = Settings(space="union", space_doc=union, budget=BUDGET)
    chosen = [("classic", name, named(name)) for name, _ in reference_points(settings)]
    chosen += _good_region(pool, {space.digest(g) for _, _, g in chosen})
    chosen += _draws(union, GENOTYPES - len(chosen), {space.digest(g) for _, _, g in chosen})
    entries = [{"label": label, "group": group, "family": g.family or "custom", "digest": space.digest(g),
                "genotype": space.schema.canonical_json(g), "seeds": list(SEEDS[group])}
               for group, label, g in chosen]
    RUNS.mkdir(exist_ok=True)
    path.write_text(json.dumps({"pool": pool, "spec": asdict(TRUTH), "val_images": VAL_IMAGES,
                                "genotypes": entries}, indent=1))
    return entries


def _good_region(pool: str, taken: set[str]) -> list[tuple[str, str, space.Genotype]]:
    names = optuna.get_all_study_names(pool)
    trials = [t for name in names for t in optuna.load_study(study_name=name, storage=pool).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    order = sorted_by_fronts([(t.values[0], t.values[1]) for t in trials])
    out = []
    for i in order:
        g = stored_genotype(trials[i])
        if space.digest(g) not in taken and len(out) < GOOD:
            taken.add(space.digest(g))
            out.append(("good", f"good{len(out) + 1}-{g.family}-t{trials[i].number}", g))
    return out


def _draws(union: dict, n: int, taken: set[str], seed: int = 0) -> list[tuple[str, str, space.Genotype]]:
    """`n` draws under budget, round-robin over the families so each is represented."""
    rng, families, out = random.Random(seed), list(union["labels"]), []
    while len(out) < n:
        g = sample(union, rng)
        want = families[len(out) % len(families)]
        try:
            fits = space.complexity(g, 224, DEPLOY_CLASSES, breakdown=False).flops <= BUDGET
        except space.GenotypeError:
            continue
        if fits and g.family == want and space.digest(g) not in taken:
            taken.add(space.digest(g))
            out.append(("draw", f"draw{len(out) + 1}-{g.family}", g))
    return out


def run_path(index: int, entry: dict, seed: int) -> Path:
    return RUNS / f"{index:02d}-{entry['label']}-s{seed}.json"


_DATA: list[datasets.Splits] = []


def _splits() -> datasets.Splits:
    if not _DATA:
        _DATA.append(datasets.load(DATASET, resolution=TRUTH.resolution, seed=SPLIT_SEED,
                                   val_images=VAL_IMAGES, train_images=TRUTH.train_images))
    return _DATA[0]


class _OutOfTime(Exception):
    """The next epoch would end past the part's deadline: the run stops at its checkpoint instead."""


def train_one(index: int, entry: dict, seed: int, deadline: float | None = None) -> dict | None:
    """Train one genotype's truth network with one seed and write its JSON (atomically); None when it
    paused at its checkpoint because the next epoch would end past `deadline` (time.time())."""
    data = _splits()
    g = space.load(json.loads(entry["genotype"]))
    net = make_proxy(g, TRUTH.resolution, TRUTH.width, TRUTH.depth, data.in_channels, data.num_classes)
    torch.manual_seed(trial_seed(seed, index))
    model = space.build(net, data.num_classes, data.in_channels)
    path = run_path(index, entry, seed)
    checkpoint = path.with_suffix(".ckpt")  # git-ignored; lets a run longer than a session span several
    resumed = len(torch.load(checkpoint, weights_only=True)["history"]) if checkpoint.exists() else 0
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    epoch_start = time.time()

    def pause_if_late(epoch: int, accuracy: float) -> None:
        nonlocal epoch_start
        now = time.time()
        if deadline is not None and epoch < TRUTH.epochs and now + (now - epoch_start) > deadline:
            raise _OutOfTime
        epoch_start = now

    try:
        result = train(model, data, TRUTH.recipe(seed), torch.device("cpu"), pause_if_late, checkpoint=checkpoint)
        accuracy, history, diverged, cpu = result.val_accuracy, result.history, None, result.cpu_time
    except _OutOfTime:
        print(f"  truth {entry['label']} seed {seed}: paused at its checkpoint for the next part", flush=True)
        return None
    except Diverged as e:  # kept as a finding of the fixed recipe, with its epoch, never retried at other settings
        accuracy, history, diverged, cpu = None, [], str(e), time.process_time() - cpu_start
    out = {"index": index, "label": entry["label"], "digest": entry["digest"], "seed": seed,
           "accuracy": accuracy, "diverged": diverged, "history": history, "cpu_s": cpu,
           "wall_s": time.perf_counter() - wall_start, "resumed_after_epoch": resumed,
           "threads": torch.get_num_threads(),
           "flops": space.complexity(net, breakdown=False, in_channels=data.in_channels).flops,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    checkpoint.unlink(missing_ok=True)
    print(f"  truth {entry['label']} seed {seed}: accuracy {accuracy}, {out['cpu_s']:.0f} cpu s", flush=True)
    return out


def _flops(entry: dict) -> int:
    """A run's truth-network multiply-adds: the parts run every genotype's first seed cheapest first, then
    the second seeds, so a partial truth already measures as many genotypes as its CPU-hours allow."""
    g = space.load(json.loads(entry["genotype"]))
    net = make_proxy(g, TRUTH.resolution, TRUTH.width, TRUTH.depth, 1, 10)  # Fashion-MNIST: 1 channel, 10 classes
    return space.complexity(net, breakdown=False, in_channels=1).flops


def _train_star(task: tuple) -> dict | None:
    return train_one(*task)


def run(pool: str | None, jobs: int, minutes: float) -> dict:
    """Train the runs still missing within about `minutes`: none starts after them, and a running one
    pauses at its last epoch's checkpoint when its next epoch would end past them (the next part resumes
    it, first); then assemble what exists."""
    entries = plan(pool)
    todo = sorted(((i, e, s) for s in (0, 1) for i, e in enumerate(entries)
                   if s in e["seeds"] and not run_path(i, e, s).exists()),
                  key=lambda task: (not run_path(*task).with_suffix(".ckpt").exists(), task[2], _flops(task[1])))
    print(f"truth: {len(todo)} runs to go", flush=True)
    deadline = time.time() + 60 * minutes
    os.environ["OMP_NUM_THREADS"] = "1"
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as workers:
        running = set()
        while todo or running:
            while todo and len(running) < jobs and time.time() < deadline:
                running.add(workers.submit(_train_star, todo.pop(0) + (deadline,)))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            if any(future.result() is None for future in done):
                todo = []  # a run paused: this part's time is up
    return assemble(entries)


def assemble(entries: list[dict]) -> dict:
    """fidelity-truth.json's content: each genotype's accuracies by seed, mean and seed std."""
    rows, missing = [], 0
    for i, e in enumerate(entries):
        runs = [json.loads(p.read_text()) for s in e["seeds"] if (p := run_path(i, e, s)).exists()]
        missing += len(e["seeds"]) - len(runs)
        accs = [r["accuracy"] for r in runs if r["accuracy"] is not None]
        rows.append({k: e[k] for k in ("label", "group", "family", "digest", "genotype")} | {
            "accuracies": {str(r["seed"]): r["accuracy"] for r in runs},
            "histories": {str(r["seed"]): r["history"] for r in runs},
            "diverged_seeds": [r["seed"] for r in runs if r["accuracy"] is None],
            "truth": statistics.fmean(accs) if accs else None,
            "std": statistics.stdev(accs) if len(accs) > 1 else None,
            "cpu_s": sum(r["cpu_s"] for r in runs), "flops": runs[0]["flops"] if runs else None})
    return {"spec": asdict(TRUTH), "val_images": VAL_IMAGES, "split_seed": SPLIT_SEED, "dataset": DATASET,
            "complete": missing == 0, "missing_runs": missing, "rows": rows}
