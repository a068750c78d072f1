"""Which design choices matter: for each design axis and each space parameter, its importance, its
bootstrap good range and the error EDFs it splits (Radosavovic et al.: NDS 2019, RegNet 2020; pycls).

Complexity normalisation. Under a budget a bigger network is more accurate for that reason alone, so
every statistic here compares a model with models of like complexity, as NDS does:
- importance (Optuna's PED-ANOVA) and the bootstrap rank trials by their *relative error*: the error
  (1 - proxy accuracy) less the mean error of the trials in its log10-FLOPs bin (the equal-width bins
  of explorer.analysis.stats, those `explore edf --flop-normalised` reweights by);
- the EDFs and KS statistics reweight each group to the pooled FLOP distribution (stats.normalise); the
  p-value is the KS test's asymptotic one at the groups' effective sizes (Kish: (sum w)^2 / sum w^2),
  which is scipy.stats.ks_2samp's asymptotic p-value when the weights are equal.
`raw=True` uses the plain error and unweighted EDFs instead.

Good range (pycls's get_filters): draw a quarter of the trials with replacement and keep the best
one's value, many times. A number's good range is the central 95% of the kept values (its 2.5th and
97.5th percentiles, both values some trial took); an option is good when it was kept in at least 2.5% of
the resamples, the share the 95% interval cuts from each end of a range.

Importance is PED-ANOVA's (Watanabe et al. 2023, Optuna's PedAnovaImportanceEvaluator): how far a
parameter's distribution among the best tenth of the trials (by relative error) departs from its
distribution among all of them, as shares summing to 1 over the axes, or over the space's parameters.
Optuna scores a conditional parameter (a union family's) on the trials that took it. fANOVA was tried
first: its marginals over one-hot options grow as 2^options (a union study's `kernels` axis alone took
minutes), where PED-ANOVA takes a second.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from scipy.stats import kstwo

from space.axes import depth_bin, design_axes

from ..base.errors import UserError
from ..base.settings import BOOTSTRAP, PARAM_MIN_TRIALS, REFINE_MIN_TRIALS
from ..studies.store import completed, load_study, settings_of
from . import stats
from .pareto import stored_genotype

AXES = ("family", "depth", "width", "cardinality", "growth", "kernels", "separable", "residual")
NUMERIC_AXES = ("depth", "width", "cardinality", "growth")
IMPORTANCE_MIN_TRIALS = 20  # PED-ANOVA contrasts the best tenth with all: below 20 trials that tenth is one trial


# ---------------------------------------------------------------------------- reading trials (one place)


@dataclass(frozen=True)
class Sample:
    """A completed trial drawn from the space, as this analysis reads it."""
    number: int
    error: float                # 1 - proxy validation accuracy
    flops: int                  # multiply-adds of the deployed network
    axes: dict[str, Any]        # the design axes (space.axes.design_axes)
    params: dict[str, Any]      # the space parameters it took (Optuna's values: options' labels)
    distributions: dict[str, Any] = field(default_factory=dict)


def read_samples(study) -> list[Sample]:
    """The study's completed trials less its reference points (classics are not samples of the space)."""
    out = []
    for t in completed(study):
        attrs = t.user_attrs
        if attrs.get("reference"):
            continue
        axes = {k: attrs[k] for k in AXES if k in attrs}
        if len(axes) < len(AXES):  # a trial recorded before the axes were: derive them from its genotype
            try:
                axes = design_axes(stored_genotype(t))
            except UserError as e:
                print(f"warning: {e}; trial {t.number} is skipped", file=sys.stderr)
                continue
        out.append(Sample(t.number, 1.0 - t.values[0], int(attrs.get("flops", t.values[1])), axes,
                          dict(t.params), dict(t.distributions)))
    return out


def open_samples(study_name: str, storage: str | None, min_trials: int = REFINE_MIN_TRIALS,
                 purpose: str = "good ranges"):
    """(study, settings, samples) of a study with at least `min_trials` drawn trials, else one UserError."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = load_study(study_name, storage)
    try:
        settings = settings_of(study)
    except (ValueError, TypeError) as e:  # a stored settings or space document that isn't JSON
        raise UserError(f"study '{study_name}': its stored settings or space can't be read ({e})") from None
    samples = read_samples(study)
    if len(samples) < min_trials:
        raise UserError(f"study '{study_name}' has {len(samples)} completed drawn trial(s); {purpose} need at "
                        f"least {min_trials} (reference points are not samples): run `explore search --study "
                        f"{study_name} --trials {len(completed(study)) + min_trials - len(samples)}`")
    return study, settings, samples


# ---------------------------------------------------------------------------- the statistics


def relative_errors(samples: list[Sample], raw: bool = False) -> np.ndarray:
    """Each trial's error less the mean error of its log10-FLOPs bin (the plain error when `raw`)."""
    errors = np.array([s.error for s in samples], float)
    if raw or not len(errors):
        return errors
    flops = np.array([s.flops for s in samples], float)
    edges = stats.flop_bins([stats.Group("all", errors, flops)])
    bins = np.clip(np.searchsorted(edges, np.log10(flops), side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(bins, minlength=len(edges) - 1)
    means = np.bincount(bins, errors, minlength=len(edges) - 1) / np.maximum(counts, 1)
    return errors - means[bins]


def bootstrap_best(scores: np.ndarray, seed: int, resamples: int = BOOTSTRAP["resamples"],
                   share: float = BOOTSTRAP["share"]) -> np.ndarray:
    """The index of the best (lowest-scoring) trial of each of `resamples` draws of `share` of the trials."""
    rng = np.random.default_rng(seed)
    k = max(1, int(len(scores) * share))
    picks = rng.integers(0, len(scores), size=(resamples, k))
    return picks[np.arange(resamples), np.argmin(scores[picks], axis=1)]


@dataclass
class Finding:
    """What the trials say about one axis or parameter."""
    name: str
    kind: str                   # "axis" or "parameter"
    trials: int                 # trials that took it
    numeric: bool
    low: float | None = None    # the good range (numbers): the central 95% of the resamples' best values
    median: float | None = None
    high: float | None = None
    shares: dict[str, float] = field(default_factory=dict)  # options: share of resamples each was the best's
    good: list = field(default_factory=list)                # options kept in at least 2.5% of resamples
    importance: float | None = None
    ks: float | None = None     # error EDFs inside vs outside the good range: KS statistic and p-value
    p: float | None = None
    note: str = ""

    def inside(self, value) -> bool:
        if self.numeric:
            return self.low <= value <= self.high
        return value in self.good

    def range_text(self) -> str:
        if self.numeric:
            return f"{_num(self.low)}..{_num(self.high)} (median {_num(self.median)})"
        return ", ".join(f"{v} {self.shares[str(v)]:.0%}" for v in self.good)


def _num(value: float) -> str:
    return f"{value:g}" if value is not None else "n/a"


def good_range(name: str, kind: str, values: list, scores: np.ndarray, numeric: bool, seed: int) -> Finding:
    """The bootstrap good range of one axis or parameter over the trials that took it."""
    best = [values[i] for i in bootstrap_best(scores, seed)]
    tail = 100 * (1 - BOOTSTRAP["interval"]) / 2
    finding = Finding(name, kind, len(values), numeric)
    if numeric:
        kept = np.array(best, float)
        finding.low = _plain(np.percentile(kept, tail, method="lower"), values)
        finding.median = float(np.percentile(kept, 50, method="nearest"))
        finding.high = _plain(np.percentile(kept, 100 - tail, method="higher"), values)
        return finding
    counts: dict[str, int] = {}
    for v in best:
        counts[str(v)] = counts.get(str(v), 0) + 1
    options = sorted(set(values), key=lambda v: (-counts.get(str(v), 0), str(v)))
    finding.shares = {str(v): counts.get(str(v), 0) / len(best) for v in options}
    finding.good = [v for v in options if finding.shares[str(v)] >= tail / 100]
    return finding


def _plain(value, values: list):
    """A percentile as the type the values have (an int range stays an int range)."""
    return int(value) if all(isinstance(v, int) for v in values) else float(value)


def weighted_ks(a: stats.Group, b: stats.Group) -> tuple[float, float | None]:
    """KS statistic between two groups' (weighted) EDFs and its asymptotic p-value at their effective sizes."""
    if not a.n or not b.n:
        return float("nan"), None
    d = stats.ks(a, b)
    na, nb = (float(np.sum(g.w)) ** 2 / float(np.sum(g.w ** 2)) for g in (a, b))
    return d, float(kstwo.sf(d, max(1, round(na * nb / (na + nb)))))


def split_ks(finding: Finding, values: list, samples: list[Sample], raw: bool) -> tuple[float | None, float | None]:
    """The KS test between the trials inside the good range and those outside it (None if one side is empty)."""
    inside = np.array([finding.inside(v) for v in values])
    if inside.all() or not inside.any():
        return None, None
    errors = np.array([s.error for s in samples], float)
    flops = np.array([s.flops for s in samples], float)
    groups = [stats.Group(label, errors[mask], flops[mask]) for label, mask in (("in", inside), ("out", ~inside))]
    d, p = weighted_ks(*(groups if raw else stats.normalise(groups)))
    return d, p


def importances(rows: list[dict[str, Any]], distributions: dict[str, Any], target: np.ndarray) -> dict[str, float]:
    """PED-ANOVA's importance of each parameter for reaching the best tenth of `target` (lowest), as shares
    summing to 1; a trial's row holds only the parameters it took (Optuna handles conditional ones). A
    parameter that never varies scores 0; with fewer than IMPORTANCE_MIN_TRIALS trials nothing is scored."""
    if len(target) < IMPORTANCE_MIN_TRIALS:
        return {}
    varied = {k for k in distributions if len({repr(row[k]) for row in rows if k in row}) > 1}
    if not varied:
        return dict.fromkeys(distributions, 0.0)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the scratch study's creation is no news
    study = optuna.create_study()
    study.add_trials([optuna.trial.create_trial(params={k: v for k, v in row.items() if k in varied},
                                                distributions={k: distributions[k] for k in row if k in varied},
                                                value=float(y)) for row, y in zip(rows, target)])
    with warnings.catch_warnings():  # the evaluator is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(found.get(k, 0.0)) for k in distributions}


def axis_distribution(values: list):
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return IntDistribution(min(values), max(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return FloatDistribution(min(values), max(values))
    return CategoricalDistribution(sorted(set(values), key=str))


# ---------------------------------------------------------------------------- the whole analysis


@dataclass
class Analysis:
    study: str
    trials: int
    raw: bool
    seed: int
    axes: list[Finding]
    parameters: list[Finding]

    def to_json(self) -> dict:
        return {"study": self.study, "trials": self.trials, "seed": self.seed,
                "error": "error (1 - proxy accuracy)" if self.raw else "error relative to its log-FLOPs bin's mean",
                "bootstrap": BOOTSTRAP, "axes": [asdict(f) for f in self.axes],
                "parameters": [asdict(f) for f in self.parameters]}

    def parameter(self, name: str) -> Finding | None:
        return next((f for f in self.parameters if f.name == name), None)


def analyse(study_name: str, samples: list[Sample], seed: int = 0, raw: bool = False) -> Analysis:
    scores = relative_errors(samples, raw)
    return Analysis(study_name, len(samples), raw, seed, axis_findings(samples, scores, seed, raw),
                    parameter_findings(samples, scores, seed, raw))


def axis_findings(samples: list[Sample], scores: np.ndarray, seed: int, raw: bool) -> list[Finding]:
    columns = {a: [s.axes[a] for s in samples] for a in AXES}
    weights = importances([s.axes for s in samples], {a: axis_distribution(columns[a]) for a in AXES}, scores)
    out = []
    for a in AXES:
        f = good_range(a, "axis", columns[a], scores, a in NUMERIC_AXES, seed)
        f.importance = weights.get(a)
        f.ks, f.p = split_ks(f, columns[a], samples, raw)
        out.append(f)
    return out


def parameter_findings(samples: list[Sample], scores: np.ndarray, seed: int, raw: bool) -> list[Finding]:
    """Each space parameter, over the trials that took it."""
    takers: dict[str, list[int]] = {}
    distributions: dict[str, Any] = {}
    for i, s in enumerate(samples):
        for name in s.params:
            takers.setdefault(name, []).append(i)
            distributions.setdefault(name, s.distributions[name])
    weights = importances([s.params for s in samples], distributions, scores)
    out = []
    for name in sorted(takers):
        who = takers[name]
        values = [samples[i].params[name] for i in who]
        numeric = isinstance(distributions[name], (IntDistribution, FloatDistribution))
        if len(who) < PARAM_MIN_TRIALS:
            out.append(Finding(name, "parameter", len(who), numeric,
                               note=f"only {len(who)} trials took it (fewer than {PARAM_MIN_TRIALS}): left as it is"))
            continue
        f = good_range(name, "parameter", values, scores[who], numeric, seed)
        f.importance = weights.get(name)
        f.ks, f.p = split_ks(f, values, [samples[i] for i in who], raw)
        out.append(f)
    return out


# ---------------------------------------------------------------------------- EDFs split by an axis


def value_label(axis: str, value) -> str:
    """The EDF group of an axis value: depth and width in powers-of-two bins, the rest as they are."""
    if axis in ("depth", "width") and isinstance(value, int):
        return depth_bin(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def split_groups(samples: list[Sample], axis: str, raw: bool = False) -> list[stats.Group]:
    """The trials' error EDF groups by an axis's values, in the values' order; FLOP-normalised unless `raw`."""
    parts: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: (str(type(s.axes[axis])), s.axes[axis])):
        parts.setdefault(value_label(axis, s.axes[axis]), []).append(s)
    groups = [stats.Group(label, np.array([s.error for s in part]), np.array([s.flops for s in part], float),
                          [s.number for s in part]) for label, part in parts.items()]
    return groups if raw else stats.normalise(groups)
