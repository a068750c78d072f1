"""Top-k fidelity: does a proxy pick the genotypes that are truly best, not only tell bad from good?

An overall Kendall tau is carried by the easy pairs (a weak network against a strong one); the
question a search answers is about the top. Beside the overall tau and rho these are NASLib's
zero-cost metrics, and a search's own loss:
- `tau_top_half`: Kendall tau among the truth's better half;
- `precision_at(k)`: the share of the proxy's top k that are in the truth's top k;
- `br_at(k)`: the truth rank (1 = best) of the best, by truth, of the proxy's top k;
- `regret`: the truth accuracy of the truly best minus that of the proxy's pick.
Each comes with a bootstrap 95% interval over genotypes (resampled with replacement), since with
~30 genotypes a single figure hides how much one genotype moves it.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

from scipy import stats

Metric = Callable[[Sequence[float], Sequence[float]], float | None]
BOOTSTRAP = 2000


def _order(values: Sequence[float]) -> list[int]:
    """Indices best (highest) first; ties keep the earlier index first."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


def kendall(pred: Sequence[float], truth: Sequence[float]) -> float | None:
    if len(set(pred)) < 2 or len(set(truth)) < 2:
        return None
    return float(stats.kendalltau(pred, truth).statistic)


def spearman(pred: Sequence[float], truth: Sequence[float]) -> float | None:
    if len(set(pred)) < 2 or len(set(truth)) < 2:
        return None
    return float(stats.spearmanr(pred, truth).statistic)


def tau_top_half(pred: Sequence[float], truth: Sequence[float]) -> float | None:
    top = _order(truth)[: max(2, len(truth) // 2)]
    return kendall([pred[i] for i in top], [truth[i] for i in top])


def precision_at(k: int) -> Metric:
    def precision(pred: Sequence[float], truth: Sequence[float]) -> float:
        n = min(k, len(pred))
        return len(set(_order(pred)[:n]) & set(_order(truth)[:n])) / n
    precision.__name__ = f"precision@{k}"
    return precision


def br_at(k: int) -> Metric:
    def best_rank(pred: Sequence[float], truth: Sequence[float]) -> float:
        rank = {i: r + 1 for r, i in enumerate(_order(truth))}
        return float(min(rank[i] for i in _order(pred)[:k]))
    best_rank.__name__ = f"BR@{k}"
    return best_rank


def regret(pred: Sequence[float], truth: Sequence[float]) -> float:
    return max(truth) - truth[_order(pred)[0]]


METRICS: dict[str, Metric] = {"tau": kendall, "rho": spearman, "tau_top_half": tau_top_half,
                              "precision@5": precision_at(5), "precision@10": precision_at(10),
                              "BR@5": br_at(5), "regret": regret}


def interval(metric: Metric, pred: Sequence[float], truth: Sequence[float], seed: int = 0,
             resamples: int = BOOTSTRAP) -> tuple[float, float] | None:
    """The bootstrap 95% percentile interval of `metric` over genotypes resampled with replacement."""
    rng, n, values = random.Random(seed), len(pred), []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        value = metric([pred[i] for i in picks], [truth[i] for i in picks])
        if value is not None:
            values.append(value)
    if not values:
        return None
    values.sort()
    return values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]


def report(pred: Sequence[float], truth: Sequence[float], seed: int = 0,
           resamples: int = BOOTSTRAP) -> dict[str, dict]:
    """Every metric on the finite pairs: {name: {"value", "low", "high", "n"}}."""
    pairs = [(p, t) for p, t in zip(pred, truth) if p is not None and t is not None]
    p, t = [a for a, _ in pairs], [b for _, b in pairs]
    out = {}
    for name, metric in METRICS.items():
        value = metric(p, t) if len(pairs) >= 2 else None
        bounds = interval(metric, p, t, seed, resamples) if value is not None else None
        out[name] = {"value": value, "low": bounds and bounds[0], "high": bounds and bounds[1], "n": len(pairs)}
    return out


def telling(n: int) -> list[str]:
    """The top-k metrics worth showing for `n` genotypes beside a table of τ and ρ: @k ones only where k < n
    (at k >= n precision is 1 and the best-of-k is the best, whatever the proxy)."""
    return [name for name in METRICS if name not in ("tau", "rho") and ("@" not in name or int(name.split("@")[1]) < n)]


MEANING = {"tau_top_half": "tau within the reference's best half", "precision@5": "share of the top 5 in the "
           "reference's top 5", "precision@10": "the same for the top 10", "BR@5": "the reference's rank of the best "
           "of the top 5 (1: its best)", "regret": "the reference's best accuracy minus that of the ranking's pick"}


def legend(names: list[str]) -> str:
    """What each shown metric means, in one line under its table."""
    return "; ".join(f"{name}: {MEANING[name]}" for name in names)


def shown(metric: dict) -> str:
    """`0.43 [-0.53, 1]`: a metric with its bootstrap interval, as tables print it."""
    if metric["value"] is None:
        return "n/a"
    bounds = f" [{metric['low']:.3g}, {metric['high']:.3g}]" if metric["low"] is not None else ""
    return f"{metric['value']:.3g}{bounds}"
