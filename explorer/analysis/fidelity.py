"""`explore fidelity`: does the short proxy training rank genotypes as longer training does?

A sample of a study's completed trials (the top ones by proxy accuracy, plus
others drawn at random with a seed) is trained again from the trial's seed with
the *reference*: `reference` of the study's proxy, the one definition that
benchmarks/fidelity.py measures the default proxy against too. The rank
agreement between the proxy accuracy and the reference accuracy (both on the
validation split the search used) is measured with Kendall's tau and
Spearman's rho (scipy.stats); so is the agreement of every zero-cost score of
the sampled genotypes with the reference accuracy.

The result is a typed `FidelityRecord` (its trials `Retrained`), stored as JSON in the study user
attr `explore:fidelity` (the latest run), with this structure:

    {"version": 2, "created": ISO time, "dataset", "device", "seed",
     "proxy": ProxySpec fields, "reference": ProxySpec fields, "proxy_epochs", "epochs", "top", "random",
     "trials": [{"number", "picked": "top"|"random", "family", "digest", "flops", "params",
                 "proxy_accuracy", "long_accuracy", "long_test_accuracy", "wall_time", "scores": {name: value}}],
     "correlations": {"proxy accuracy" | score name:
                      {"n", "kendall_tau", "kendall_p", "spearman_rho", "spearman_p"}},
     "top_k": {"proxy accuracy" | score name: {metric: {"value", "low", "high", "n"}}}}

`top_k` (explorer.analysis.topk, with bootstrap 95% intervals over the sampled trials) says what an
overall tau hides: whether the proxy's best are the reference's best. Records made before it have none.

Correlations that are undefined (fewer than 2 finite pairs, or a constant
column) are null.
"""
from __future__ import annotations

import datetime
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace

import optuna
import torch

import space

from ..base.errors import UserError
from ..base.settings import ProxySpec, Settings
from ..studies.record import TrialRecord
from ..studies.store import completed
from ..trial import data as datasets
from ..trial import scores as zero_cost
from ..trial.candidate import trial_seed
from ..trial.proxy import make_proxy
from ..trial.trainer import Diverged, evaluate, resolve_device, set_cpu_threads, train
from . import topk
from .pareto import stored_genotype

FIDELITY_KEY = "explore:fidelity"
PROXY = "proxy accuracy"
VERSION = 2


@dataclass(frozen=True)
class Retrained:
    """One sampled trial, trained again as the reference."""
    number: int
    picked: str                      # top or random
    family: str
    digest: str | None
    flops: int                       # multiply-adds of the deployed network
    params: int
    proxy_accuracy: float
    long_accuracy: float | None      # None: the reference's training diverged
    long_test_accuracy: float | None
    wall_time: float
    scores: dict                     # zero-cost score name -> value (None where undefined)


@dataclass(frozen=True)
class FidelityRecord:
    """What `explore fidelity` measured, read once: the CLI, `--json`, the report and explorer.fidelity
    all take this object rather than each re-parsing the stored JSON."""
    created: str
    dataset: str
    device: str
    seed: int
    proxy: ProxySpec
    reference: ProxySpec
    top: int
    random: int
    trials: list[Retrained]
    correlations: dict               # ranked by (PROXY or a score) -> correlation()'s dict
    top_k: dict = field(default_factory=dict)  # ranked by -> topk.report()'s metrics

    def to_dict(self) -> dict:
        """The stored form (see the module doc); the epochs are repeated at the top for older readers."""
        return {"version": VERSION, "created": self.created, "dataset": self.dataset, "device": self.device,
                "seed": self.seed, "proxy": asdict(self.proxy), "reference": asdict(self.reference),
                "proxy_epochs": self.proxy.epochs, "epochs": self.reference.epochs, "top": self.top,
                "random": self.random, "trials": [asdict(t) for t in self.trials], "correlations": self.correlations,
                "top_k": self.top_k}

    @classmethod
    def from_dict(cls, stored: dict) -> FidelityRecord:
        """The record as stored; KeyError or TypeError for a record of another shape."""
        names = {f.name for f in fields(cls)} - {"proxy", "reference", "trials"}
        return cls(proxy=ProxySpec(**stored["proxy"]), reference=ProxySpec(**stored["reference"]),
                   trials=[Retrained(**t) for t in stored["trials"]], **{k: stored[k] for k in names if k in stored})


def reference(proxy: ProxySpec) -> ProxySpec:
    """The longer training a proxy's ranking is measured against, in `explore fidelity` and
    benchmarks/fidelity.py alike: the same network, trained 4x the epochs on 3x the training
    images (all of them when the proxy uses all). Epochs and images scale every genotype's cost
    alike, so each gets ~10x its proxy's compute (evaluation included). References at the
    native 28 px, and at twice the width, were tried first: their cost ran from under 8x
    (AlexNet, whose head dominates) to well over 40x (GoogLeNet, whose proxy stem keeps its
    maps large) the proxy's, too uneven to bound (benchmarks/RESULTS.md)."""
    images = None if proxy.train_images is None else 3 * proxy.train_images
    return replace(proxy, epochs=4 * proxy.epochs, train_images=images)


def pick_trials(trials: list, top: int, n_random: int, seed: int) -> list[tuple[str, optuna.trial.FrozenTrial]]:
    """The `top` most accurate completed trials, then `n_random` of the others drawn with `seed`."""
    ranked = sorted(trials, key=lambda t: (-t.values[0], t.number))
    best = ranked[:top]
    rest = sorted(ranked[top:], key=lambda t: t.number)
    others = random.Random(seed).sample(rest, min(n_random, len(rest)))
    return [("top", t) for t in best] + [("random", t) for t in sorted(others, key=lambda t: t.number)]


def _clean(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def correlation(xs: list, ys: list) -> dict:
    """Kendall's tau-b and Spearman's rho with their p-values over the finite pairs."""
    from scipy import stats
    pairs = [(x, y) for x, y in zip(xs, ys) if _clean(x) is not None and _clean(y) is not None]
    out = {"n": len(pairs), "kendall_tau": None, "kendall_p": None, "spearman_rho": None, "spearman_p": None}
    if len(pairs) < 2 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return out
    a, b = zip(*pairs)
    tau = stats.kendalltau(a, b)
    rho = stats.spearmanr(a, b)
    out.update(kendall_tau=_clean(tau.statistic), kendall_p=_clean(tau.pvalue),
               spearman_rho=_clean(rho.statistic), spearman_p=_clean(rho.pvalue))
    return out


def reference_of(settings: Settings, multiplier: int | None = None) -> ProxySpec:
    """`reference` of the study's proxy; `multiplier` replaces its epochs factor."""
    proxy = settings.proxy
    ref = reference(proxy)
    return ref if multiplier is None else replace(ref, epochs=proxy.epochs * multiplier)


def run(study, settings: Settings, top: int = 5, n_random: int = 5, multiplier: int | None = None, seed: int = 0,
        device: str = "auto", data_dir=None, on_trial=None, ref: ProxySpec | None = None) -> FidelityRecord:
    """Retrain the sample with the reference (`ref`, default `reference_of(settings, multiplier)`),
    measure rank agreement, store and return the result (see the module doc)."""
    trials = [t for t in completed(study) if "genotype" in t.user_attrs]
    if len(trials) < 2:
        raise UserError(f"study '{study.study_name}' has {len(trials)} completed trials; a rank correlation "
                        "needs at least 2 (run `explore search` further)")
    picked = pick_trials(trials, top, n_random, seed)
    if len(picked) < 2:
        raise UserError("--top and --random pick fewer than 2 trials; a rank correlation needs at least 2")
    dev = resolve_device(device)
    if dev.type == "cpu":
        set_cpu_threads()
    ref = ref or reference_of(settings, multiplier)
    data = datasets.load(settings.dataset, resolution=ref.resolution, data_dir=data_dir, seed=settings.seed,
                         val_images=settings.val_images, train_images=ref.train_images)
    rows = []
    for why, t in picked:
        rows.append(_retrain(t, why, ref, settings, data, dev))
        if on_trial:
            on_trial(len(rows), len(picked), rows[-1])
    longs = [r.long_accuracy for r in rows]
    rankings = {PROXY: [r.proxy_accuracy for r in rows], **{name: [r.scores[name] for r in rows]
                                                              for name in zero_cost.SCORES}}
    record = FidelityRecord(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                            settings.dataset, str(dev), seed, settings.proxy, ref, top, n_random, rows,
                            {name: correlation(column, longs) for name, column in rankings.items()},
                            {name: topk.report(column, longs, seed) for name, column in rankings.items()})
    study.set_user_attr(FIDELITY_KEY, json.dumps(record.to_dict()))
    return record


def _retrain(t, why: str, ref: ProxySpec, settings: Settings, data, dev) -> Retrained:
    """One trial's genotype adapted and trained as the reference, from the trial's seed."""
    proxy = make_proxy(stored_genotype(t), ref.resolution, ref.width, ref.depth, data.in_channels, data.num_classes)
    scores = zero_cost.score_proxy(proxy, data, zero_cost.SCORES, seed=settings.seed, device=dev)
    torch.manual_seed(trial_seed(settings.seed, t.number))
    model = space.build(proxy, data.num_classes, data.in_channels).to(dev)
    space.network.stochastic_depth(model, settings.stochastic_depth)
    started = time.perf_counter()
    try:
        long_acc = train(model, data, ref.recipe(settings.seed), dev).val_accuracy
        test_acc = evaluate(model, data.test_x, data.test_y, data, dev)
    except Diverged:
        long_acc = test_acc = None
    record = TrialRecord.of(t, settings.objective)
    return Retrained(t.number, why, record.family or "custom", record.digest or None, record.flops, record.params,
                     record.accuracy, long_acc, test_acc, time.perf_counter() - started,
                     {k: _clean(v) for k, v in scores.items()})


def stored(study) -> FidelityRecord | None:
    """The study's latest record; None if it has none or one of another shape (`explore fidelity` rewrites it)."""
    text = study.user_attrs.get(FIDELITY_KEY)
    if not text:
        return None
    try:
        return FidelityRecord.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError):
        return None
