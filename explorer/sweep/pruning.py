"""Early stopping that respects the Pareto front (`explore search --prune pareto`).

A trial is stopped after epoch e (before its last epoch) when its point
(cost, validation accuracy at epoch e) is dominated by at least k other trials
of the study that had reached epoch e, each judged by its own validation
accuracy at epoch e (the intermediate values every trial writes to storage
after each epoch), and by its cost: the study's second objective (FLOPs,
params or predicted latency), read by name. "Dominated" means: cost no higher
and accuracy no lower, and better in at least one of the two. Comparing at the
same epoch is fair because every trial of a study trains with the same recipe.

k (`--prune-k`, default 2) trades speed for safety: with k = 1 a single
lucky cheaper trial is enough to stop a candidate; with k = 2 two trials must
agree. A trial is never stopped after its last epoch, since then it has
cost all it will cost, and reference points (the classics enqueued at creation,
`explore train`) are never stopped. Stopped trials are stored PRUNED with the user attr
`pruned_at_epoch` (budget rejections carry `rejected`, pre-screening
replacements `replaced`) and don't count towards `--trials`.
"""
from __future__ import annotations

from typing import Iterable

import optuna

from ..base.settings import Settings
from ..studies.record import PRUNED_AT_EPOCH, REFERENCE, cost_at
from ..studies.rungs import rung_of

DEFAULT_K = Settings.prune_k


class PrunedAtEpoch(optuna.TrialPruned):
    """The trial's point at an epoch is dominated by at least k trials at that epoch."""


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(cost, accuracy) a dominates b: no more cost, no less accuracy, strictly better in one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def dominated_by(point: tuple[float, float], others: Iterable[tuple[float, float]]) -> int:
    """How many of `others` dominate `point`."""
    return sum(dominates(o, point) for o in others)


def points_at_epoch(trials: Iterable[optuna.trial.FrozenTrial], epoch: int, exclude: int | None = None,
                    objective: str = "flops"):
    """(cost on `objective`, accuracy at `epoch`) of every priced trial that reached `epoch`, except trial
    number `exclude`."""
    out = []
    for t in trials:
        cost = cost_at(t, objective)
        if t.number == exclude or epoch not in t.intermediate_values or cost is None or rung_of(t):
            continue  # a promotion's epochs are at another fidelity (explorer.sweep.promotion)
        out.append((cost, float(t.intermediate_values[epoch])))
    return out


def should_prune(cost: float, accuracy: float, others, k: int = DEFAULT_K) -> bool:
    return dominated_by((cost, accuracy), others) >= k


def check(trial: optuna.Trial, epoch: int, epochs: int, accuracy: float, k: int = DEFAULT_K,
          objective: str = "flops") -> None:
    """Called after each epoch's intermediate value is stored; raises PrunedAtEpoch to stop the trial.
    `objective`: the study's second objective, the cost trials are compared on."""
    if epoch >= epochs:
        return
    cost = cost_at(trial, objective)
    if cost is None or REFERENCE in trial.user_attrs:
        return  # reference points (the enqueued classics, `explore train`) always train to the end
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.PRUNED)
    others = points_at_epoch(trial.study.get_trials(deepcopy=False, states=states), epoch, trial.number, objective)
    count = dominated_by((cost, accuracy), others)
    if count >= k:
        trial.set_user_attr(PRUNED_AT_EPOCH, epoch)
        raise PrunedAtEpoch(f"dominated at epoch {epoch} by {count} trials (accuracy {accuracy:.4f})")
