"""Does the default proxy rank genotypes as a far longer training does?  (Fashion-MNIST, CPU)

    python benchmarks/fidelity.py ranking   # default proxy and reference recipe on every genotype
    python benchmarks/fidelity.py noise     # seed-to-seed spread of the proxy and of the reference
    python benchmarks/fidelity.py cost      # Kendall's tau against CPU seconds for other proxy settings
    python benchmarks/fidelity.py score     # proxy settings and zero-cost scores against the truth: top-k metrics
                                            # ([--seeds N] [--variants ...]; runs kept in fidelity-score-runs.json)
    python benchmarks/fidelity.py topk      # those metrics of `ranking`'s stored proxy and scores, on its reference
    python benchmarks/fidelity.py truth --pool sqlite:///POOL.db --minutes 85   # the ground truth, resumable

The genotypes are the classics that fit 2 GFLOPs (multiply-adds) at 224 px and belong to the
union space, plus seeded union draws spread over the families. Each is adapted and trained
exactly as `explore search` does (explorer.trial.proxy.make_proxy, explorer.trial.trainer.train, the
trial's seeding); the reference is explorer.analysis.fidelity.reference, the definition `explore
fidelity` uses too. Each part writes benchmarks/fidelity-<part>.json and prints its tables;
`cost` and `noise` reuse the proxy and reference accuracies that `ranking` wrote. Each part
finishes within 90 minutes on 2 CPU cores. CPU seconds are this process's, so other load on
the machine inflates wall time but hardly the figures.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import truth  # noqa: E402  (benchmarks/truth.py, beside this file)

import space  # noqa: E402
from explorer.analysis import fidelity, topk  # noqa: E402
from explorer.analysis.fidelity import correlation  # noqa: E402
from explorer.base.ladder import Rung, default_ladder  # noqa: E402
from explorer.base.settings import (
    ProxySpec,  # noqa: E402
    Settings,  # noqa: E402
)
from explorer.sweep.study import reference_points  # noqa: E402
from explorer.trial import data as datasets  # noqa: E402
from explorer.trial import scores as zero_cost  # noqa: E402
from explorer.trial.candidate import DEPLOY_CLASSES  # noqa: E402
from explorer.trial.proxy import make_proxy  # noqa: E402
from explorer.trial.trainer import Diverged, set_cpu_threads, train  # noqa: E402
from space.named import named  # noqa: E402
from space.sampling import load_space, sample  # noqa: E402

HERE = Path(__file__).resolve().parent
BUDGET = 2_000_000_000
GENOTYPES = 20
DRAWS_PER_FAMILY = 3  # at most; at least 2 of each of the union's families
DATASET = "fashion-mnist"


def genotypes(seed: int = 0) -> list[tuple[str, space.Genotype]]:
    """The classics under budget in the union space, then seeded draws, 2 to DRAWS_PER_FAMILY of each
    family, up to GENOTYPES in all."""
    union = load_space("union")
    settings = Settings(space="union", space_doc=union, budget=BUDGET)
    picked = [(name, named(name)) for name, _ in reference_points(settings)]
    rng, per_family, families = random.Random(seed), {}, len(union["labels"])
    while len(picked) < GENOTYPES or min(per_family.values(), default=0) < 2 or len(per_family) < families:
        try:
            g = sample(union, rng)
            flops = space.complexity(g, 224, DEPLOY_CLASSES, breakdown=False).flops
        except space.GenotypeError:
            continue
        if flops <= BUDGET and per_family.get(g.family, 0) < DRAWS_PER_FAMILY:
            per_family[g.family] = per_family.get(g.family, 0) + 1
            picked.append((f"{g.family}-draw{per_family[g.family]}", g))
    return picked


_DATA: dict[tuple, datasets.Splits] = {}


def splits(spec: ProxySpec, seed: int) -> datasets.Splits:
    key = (spec.resolution, spec.train_images, seed)
    if key not in _DATA:
        _DATA[key] = datasets.load(DATASET, resolution=spec.resolution, seed=seed,
                                   train_images=spec.train_images)
    return _DATA[key]


def run_all(tasks: list[tuple], jobs: int) -> list[dict]:
    """`run(*task)` for every task, in `jobs` single-threaded processes (one thread each keeps
    their CPU seconds honest on a shared machine: no OpenMP spin-waiting)."""
    if jobs <= 1:
        return [run(*task) for task in tasks]
    os.environ["OMP_NUM_THREADS"] = "1"  # the trainer's thread policy respects it; spawned workers inherit it
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_run_star, tasks))


def _run_star(task: tuple) -> dict:
    return run(*task)


def run(g: space.Genotype, spec: ProxySpec, seed: int = 0, number: int = 0) -> dict:
    """Train one genotype's proxy as a search trial would: accuracy and CPU seconds."""
    data = splits(spec, seed)
    proxy = make_proxy(g, spec.resolution, spec.width, spec.depth, data.in_channels, data.num_classes)
    torch.manual_seed(seed * 100_003 + number)
    model = space.build(proxy, data.num_classes, data.in_channels)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        accuracy = train(model, data, spec.recipe(seed), torch.device("cpu")).val_accuracy
    except Diverged:
        accuracy = None
    out = {"accuracy": accuracy, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
           "proxy_flops": space.complexity(proxy, breakdown=False, in_channels=data.in_channels).flops}
    print(f"  trained {g.name or g.family} #{number} seed {seed} at {spec.resolution}px, {spec.epochs} epochs, "
          f"{spec.train_images} images: accuracy {_fmt(accuracy)}, {out['cpu_s']:.0f} cpu s", flush=True)
    return out


def scores(g: space.Genotype, spec: ProxySpec) -> dict:
    data = splits(spec, 0)
    proxy = make_proxy(g, spec.resolution, spec.width, spec.depth, data.in_channels, data.num_classes)
    return {k: zero_cost.clean(v) for k, v in zero_cost.score_proxy(proxy, data, zero_cost.SCORES).items()}


def correlations(rows: list[dict], key: str, against: str = "reference") -> dict:
    out = {"all": correlation([r[key] for r in rows], [r[against] for r in rows])}
    for family in sorted({r["family"] for r in rows}):
        members = [r for r in rows if r["family"] == family]
        if len(members) >= 5:
            out[family] = correlation([r[key] for r in members], [r[against] for r in members])
    return out


def ranking(args) -> dict:
    proxy, ref = ProxySpec(), fidelity.reference(ProxySpec())
    chosen = genotypes()
    tasks = [(g, spec, 0, i) for i, (_, g) in enumerate(chosen) for spec in (proxy, ref)]
    results = run_all(tasks, args.jobs)
    rows = []
    for i, (label, g) in enumerate(chosen):
        p, r = results[2 * i], results[2 * i + 1]
        row = {"label": label, "family": g.family or "custom", "digest": space.digest(g),
               "genotype": space.schema.canonical_json(g),
               "proxy": p["accuracy"], "proxy_cpu_s": p["cpu_s"], "proxy_flops": p["proxy_flops"],
               "reference": r["accuracy"], "reference_cpu_s": r["cpu_s"], "reference_flops": r["proxy_flops"],
               "scores": scores(g, proxy)}
        rows.append(row)
        print(f"{i + 1:3d} {label:20s} proxy {_fmt(p['accuracy'])} ({p['cpu_s']:5.0f} cpu s)  "
              f"reference {_fmt(r['accuracy'])} ({r['cpu_s']:5.0f} cpu s)", flush=True)
    for r in rows:
        r.update(r["scores"])
    ratio = sum(r["reference_cpu_s"] for r in rows) / sum(r["proxy_cpu_s"] for r in rows)
    result = {"proxy_spec": asdict(proxy), "reference_spec": asdict(ref), "cost_ratio": ratio, "rows": rows,
              "correlations": {name: correlations(rows, name) for name in ("proxy", *zero_cost.SCORES)}}
    print(f"reference / proxy CPU seconds: {ratio:.1f}x")
    for name, by_family in result["correlations"].items():
        for family, c in by_family.items():
            print(f"{name:10s} {family:10s} n {c['n']:2d}  tau {_fmt(c['kendall_tau'])} (p {_fmt(c['kendall_p'])})"
                  f"  rho {_fmt(c['spearman_rho'])} (p {_fmt(c['spearman_p'])})")
    return result


def _fmt(value) -> str:
    return "  n/a" if value is None else f"{value:.3g}"


def noise(args) -> dict:
    rows = _stored("ranking")["rows"]
    # every 6th genotype from the second, spread over the families; the first (AlexNet) is skipped as its
    # reference alone costs ~450 CPU seconds
    chosen = rows[1::6][:4]
    out = {"proxy": [], "reference": []}
    plan = [(what, spec, row, seed) for what, spec, seeds, n in (
        ("proxy", ProxySpec(), 3, 4), ("reference", fidelity.reference(ProxySpec()), 2, 3))
        for row in chosen[:n] for seed in range(1, seeds)]
    results = run_all([(space.load(json.loads(row["genotype"])), spec, seed, rows.index(row))
                       for _, spec, row, seed in plan], args.jobs)
    for what, n in (("proxy", 4), ("reference", 3)):
        for row in chosen[:n]:
            accs = [row[what]] + [r["accuracy"] for (w, _, r_row, _), r in zip(plan, results)
                                  if w == what and r_row is row]
            out[what].append({"label": row["label"], "accuracies": accs, "std": statistics.stdev(accs)})
            print(f"{what:9s} {row['label']:28s} {' '.join(f'{a:.4f}' for a in accs)}  "
                  f"std {statistics.stdev(accs):.4f}", flush=True)
    for what in ("proxy", "reference"):
        out[f"{what}_mean_std"] = statistics.fmean(r["std"] for r in out[what])
    return out


def cost(args) -> dict:
    rows = _stored("ranking")["rows"]
    base = ProxySpec()
    variants = {"epochs x2": replace(base, epochs=base.epochs * 2),
                "train images x2": replace(base, train_images=base.train_images * 2),
                "resolution 16": replace(base, resolution=16),
                "width x2": replace(base, width=base.width * 2),
                "depth +1": replace(base, depth=base.depth + 1)}
    variants = {name: variants[name] for name in args.variants} if args.variants else variants
    tasks = [(space.load(json.loads(r["genotype"])), spec, 0, i) for spec in variants.values()
             for i, r in enumerate(rows)]
    results = run_all(tasks, args.jobs)
    done = HERE / "fidelity-cost.json"  # variants measured by earlier runs are kept: run them a few at a time
    table = {k: v for k, v in json.loads(done.read_text()).items() if k != "machine"} if done.exists() else {}
    for k, (name, spec) in enumerate({"default": base, **variants}.items()):
        if name == "default":
            accs, cpu = [r["proxy"] for r in rows], [r["proxy_cpu_s"] for r in rows]
        else:
            runs = results[(k - 1) * len(rows):k * len(rows)]
            accs, cpu = [x["accuracy"] for x in runs], [x["cpu_s"] for x in runs]
        c = correlation(accs, [r["reference"] for r in rows])
        table[name] = {"spec": asdict(spec), "cpu_s_per_trial": statistics.fmean(cpu), **c, "accuracies": accs}
        print(f"{name:16s} {statistics.fmean(cpu):6.1f} cpu s/trial  tau {_fmt(c['kendall_tau'])} "
              f"(p {_fmt(c['kendall_p'])})  rho {_fmt(c['spearman_rho'])}", flush=True)
    return table


_BASE = ProxySpec()


def _rung(number: int) -> ProxySpec:
    """The default ladder's rung `number` (`explore search --rungs 3`) as a proxy setting, one seed."""
    rung = default_ladder(Rung(_BASE.epochs, _BASE.train_images, _BASE.resolution, _BASE.width), 3)[number]
    return replace(_BASE, epochs=rung.epochs, train_images=rung.train_images)


TRUTH_VARIANTS = {"default": _BASE, "16 px": replace(_BASE, resolution=16), "20 px": replace(_BASE, resolution=20),
                  "28 px": replace(_BASE, resolution=28), "width x1": replace(_BASE, width=1.0),
                  "epochs x2": replace(_BASE, epochs=2 * _BASE.epochs),
                  # the default's cost spent on more steps: twice the epochs on half the images
                  "epochs x2, images /2": replace(_BASE, epochs=2 * _BASE.epochs, train_images=_BASE.train_images // 2),
                  "rung 1": _rung(1), "rung 2": _rung(2), "repeats <= 2": replace(_BASE, depth=2),
                  # the truth's network at the default's training: is the default's bias its shape or its length?
                  "truth's shape": replace(_BASE, resolution=truth.TRUTH.resolution, width=truth.TRUTH.width,
                                           depth=truth.TRUTH.depth)}


SCORE_RUNS = HERE / "fidelity-score-runs.json"
SEEDS_MAX = 5  # seeds a setting can be scored with


def score(args) -> dict:
    """Each proxy setting (and each zero-cost score) ranked against the truth's mean accuracies: the top-k
    metrics with bootstrap intervals, and CPU seconds per trial for the cost table. `--variants` names the
    settings to train (`--seeds` seeds each); every setting kept for every measured genotype is reported:
    on seed 0, and where it holds more seeds, on their mean and seed against seed (its own noise); and, on the
    mean, whether it ranks the bigger networks too high within the truth's top half (its size bias)."""
    measured = truth.assemble(truth.plan(None))
    rows = [(i, r) for i, r in enumerate(measured["rows"]) if r["truth"] is not None]
    if len(rows) < 5:
        sys.exit(f"the truth has {len(rows)} genotypes measured; run `python benchmarks/fidelity.py truth` further")
    truth_rows = [r for _, r in rows]
    truths = [r["truth"] for r in truth_rows]
    out = {"truth_complete": measured["complete"], "genotypes": len(rows), "ceiling": _ceiling(truth_rows),
           "truth_by_epoch": _truth_by_epoch(truth_rows), "proxies": {}}
    kept = _proxy_runs(rows, args.variants or list(TRUTH_VARIANTS), args.seeds, args.jobs)
    for name, setting in kept.items():
        seeds = [s for s in range(SEEDS_MAX) if all(f"{r['digest']}/{s}" in setting["runs"] for _, r in rows)]
        if name not in TRUTH_VARIANTS or setting["spec"] != asdict(TRUTH_VARIANTS[name]) or not seeds:
            continue  # a setting no longer defined, or not yet trained on every measured genotype
        by_seed = [[setting["runs"][f"{r['digest']}/{s}"] for _, r in rows] for s in seeds]
        accuracies = [[run["accuracy"] for run in runs] for runs in by_seed]
        means = [_mean(a) for a in zip(*accuracies)]
        out["proxies"][name] = {"spec": setting["spec"], "seeds": len(seeds), "accuracies": accuracies,
                                "cpu_s_per_trial": statistics.fmean(run["cpu_s"] for run in by_seed[0]),
                                "metrics": topk.report(accuracies[0], truths),
                                "size_bias": _size_bias(means, truth_rows)}
        if len(seeds) > 1:
            out["proxies"][name]["mean_of_seeds"] = topk.report(means, truths)
            out["proxies"][name]["seed_vs_seed"] = topk.report(accuracies[0], accuracies[1])
    zero = [scores(space.load(json.loads(r["genotype"])), ProxySpec()) for _, r in rows]
    out["scores"] = {name: topk.report([z[name] for z in zero], truths) for name in zero_cost.SCORES}
    _print_score(out)
    return out


def _mean(values) -> float | None:
    finite = [v for v in values if v is not None]
    return statistics.fmean(finite) if finite else None


def _size_bias(pred: list, rows: list[dict]) -> dict:
    """Within the truth's top half, does a setting rank the bigger networks too high? Kendall tau (and p)
    between the places it ranks each genotype above its truth rank and its truth network's multiply-adds."""
    def places(values: list) -> list[int]:
        order = sorted(range(len(values)), key=lambda i: -values[i] if values[i] is not None else float("inf"))
        return [order.index(i) for i in range(len(values))]
    truths = [r["truth"] for r in rows]
    by_truth, by_pred = places(truths), places(pred)
    top = [i for i in range(len(rows)) if by_truth[i] < max(2, len(rows) // 2)]
    return correlation([by_truth[i] - by_pred[i] for i in top], [rows[i]["flops"] for i in top])


def _print_score(out: dict) -> None:
    for name, row in out["proxies"].items():
        bias = row["size_bias"]
        print(f"{name:20s} {row['cpu_s_per_trial']:6.1f} cpu s/trial, {row['seeds']} seed(s); top half, places"
              f" ranked too high against truth MMAC: tau {_fmt(bias['kendall_tau'])} (p {_fmt(bias['kendall_p'])})",
              flush=True)
    named = {n: row["metrics"] for n, row in out["proxies"].items()}
    for n, row in out["proxies"].items():
        if "mean_of_seeds" in row:
            named |= {f"{n}, mean of {row['seeds']}": row["mean_of_seeds"], f"{n}, seed vs seed": row["seed_vs_seed"]}
    _print_metrics({**named, **out["scores"], **out["truth_by_epoch"]})


def _proxy_runs(rows: list[tuple[int, dict]], names: list[str], seeds: int, jobs: int) -> dict:
    """Each setting's proxy runs of each measured genotype with seeds 0..seeds-1, trained once and kept in
    SCORE_RUNS (by setting, then `digest/seed`, with the seed offset it trained with), so a score after the
    truth has grown trains only the genotypes it added. A setting whose spec has changed is trained afresh."""
    kept = json.loads(SCORE_RUNS.read_text()) if SCORE_RUNS.exists() else {}
    for name in names:
        if kept.get(name, {}).get("spec") != asdict(TRUTH_VARIANTS[name]):
            kept[name] = {"spec": asdict(TRUTH_VARIANTS[name]), "runs": {}}
    for name in names:  # kept after each setting, so an interrupted score loses one setting's runs at most
        todo = [(i, r, s) for s in range(seeds) for i, r in rows if f"{r['digest']}/{s}" not in kept[name]["runs"]]
        print(f"score: {name}: {len(todo)} proxy runs to train, {seeds * len(rows) - len(todo)} kept", flush=True)
        results = run_all([(space.load(json.loads(r["genotype"])), TRUTH_VARIANTS[name], s, i)
                           for i, r, s in todo], jobs)
        for (i, r, s), result in zip(todo, results):
            kept[name]["runs"][f"{r['digest']}/{s}"] = {"label": r["label"], "number": i, **result}
        SCORE_RUNS.write_text(json.dumps(kept, indent=1))
    return kept


def topk_on_reference(args) -> dict:
    """The top-k metrics of round 2's stored ranking (the proxy and each zero-cost score against the
    reference, the proxy trained longer): what the overall tau hides, measured without training anything."""
    rows = _stored("ranking")["rows"]
    reference = [r["reference"] for r in rows]
    out = {name: topk.report([r[name] for r in rows], reference) for name in ("proxy", *zero_cost.SCORES)}
    _print_metrics(out)
    return {"against": "round 2's reference (benchmarks/fidelity-ranking.json)", "genotypes": len(rows), **out}


def _print_metrics(named: dict[str, dict]) -> None:
    for name, metrics in named.items():
        print(f"{name:20s} " + "  ".join(f"{m} {topk.shown(v)}" for m, v in metrics.items()), flush=True)


def _ceiling(rows: list[dict]) -> dict:
    """The truth against itself: seed 0 against seed 1 where both exist, the bound on any proxy."""
    both = [r for r in rows if {"0", "1"} <= set(r["accuracies"])]
    return topk.report([r["accuracies"]["0"] for r in both], [r["accuracies"]["1"] for r in both])


def _truth_by_epoch(rows: list[dict]) -> dict:
    """Seed 0's truth run after each of its epochs against the final truth: how much of the truth's order
    its last epochs still decide. Mid-schedule snapshots of the truth's own run, sharing its seed."""
    return {f"truth's epoch {epoch + 1} of {truth.TRUTH.epochs}": topk.report(
        [r["histories"]["0"][epoch] if r["histories"].get("0") else None for r in rows], [r["truth"] for r in rows])
        for epoch in range(truth.TRUTH.epochs - 1)}


def _stored(part: str) -> dict:
    path = HERE / f"fidelity-{part}.json"
    if not path.exists():
        sys.exit(f"run `python benchmarks/fidelity.py {part}` first: {path} is missing")
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("ranking", "noise", "cost", "truth", "score", "topk"))
    parser.add_argument("--jobs", type=int, default=2, help="single-threaded training processes at once")
    parser.add_argument("--variants", nargs="*", help="cost, score: which proxy variants to train [default: all]")
    parser.add_argument("--seeds", type=int, default=1, choices=range(1, SEEDS_MAX + 1),
                        help="score: seeds each variant trains (their mean is scored too)")
    parser.add_argument("--pool", help="truth: the storage URL of a default-seed union search (for a new plan)")
    parser.add_argument("--minutes", type=float, default=85, help="truth: end this part within about this many "
                        "minutes (no run starts after them; a running one pauses at its last epoch's checkpoint)")
    args = parser.parse_args()
    set_cpu_threads()
    started = time.perf_counter()
    result = {"ranking": ranking, "noise": noise, "cost": cost,
              "truth": lambda a: truth.run(a.pool, a.jobs, a.minutes), "score": score,
              "topk": topk_on_reference}[args.part](args)
    result["machine"] = {"threads": torch.get_num_threads(), "torch": torch.__version__,
                         "wall_s": time.perf_counter() - started,
                         "date": time.strftime("%Y-%m-%d")}
    (HERE / f"fidelity-{args.part}.json").write_text(json.dumps(result, indent=1))
    print(f"{args.part}: {result['machine']['wall_s'] / 60:.1f} min; wrote benchmarks/fidelity-{args.part}.json")


if __name__ == "__main__":
    main()
