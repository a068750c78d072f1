"""How multi-fidelity promotion is kept in a study: one Optuna trial per genotype and rung.

A promotion is a new trial of the same parameters, created by the worker that claims it
(explorer.sweep.promotion), carrying the user attrs RUNG and ROOT (the number of the rung-0 trial it
promotes). So promotions are claimed, heartbeaten, retried and resumed as any trial is, in any storage.
A rung-0 trial carries neither attr. Only rung-0 trials count towards `--trials`; every view of the
front takes each genotype at its highest completed rung (`highest_rungs`).

The keys are named here, once, so that a typed trial record can read them.
"""
from __future__ import annotations

from typing import Iterable

import optuna

RUNG = "rung"                       # the rung a trial trains at (absent: 0)
ROOT = "promoted_from"              # the rung-0 trial a promotion trains again
SEED_ACCURACIES = "seed_accuracies"  # the accuracy of each seed, where a rung trains more than one
ACCURACY_STD = "accuracy_std"       # their sample standard deviation (the accuracy is their mean)


def rung_of(trial) -> int:
    return int(trial.user_attrs.get(RUNG, 0))


def root_of(trial) -> int:
    """The number of the rung-0 trial of the trial's genotype."""
    return int(trial.user_attrs.get(ROOT, trial.number))


def highest_rungs(trials: Iterable[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Of the completed trials, each genotype's (root's) at its highest rung, in root order."""
    best: dict[int, optuna.trial.FrozenTrial] = {}
    for t in trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        root = root_of(t)
        if root not in best or rung_of(t) > rung_of(best[root]):
            best[root] = t
    return [best[root] for root in sorted(best)]
