"""What one trial of a study records, read and written under one set of attribute keys.

Trials keep their record as Optuna user attributes (what optuna-dashboard shows), under the
keys below; stored studies keep them as they are. `TrialRecord` is the typed view every reader
goes through: its costs by name, its state (rejected and replaced draws are PRUNED trials with a
reason), and the objective's value read by the objective's name, never by its position.
"""
from __future__ import annotations

from dataclasses import dataclass

import optuna

from .rungs import ACCURACY_STD, SEED_ACCURACIES, rung_of

States = optuna.trial.TrialState

# The user attributes a trial is recorded under (stored studies hold these names).
REFERENCE = "reference"              # the named architecture trained as a reference point
REJECTED = "rejected"                # why a draw was never trained (impossible, over budget)
REPLACED = "replaced"                # why pre-screening replaced a draw by a better-scoring one
PRUNED_AT_EPOCH = "pruned_at_epoch"  # the epoch `--prune pareto` stopped the trial after
FAIL_REASON = "fail_reason"
OVER_BUDGET = "over_budget"          # a reference trained though it is over the study's limits
# Each second objective's cost, by Settings.objective, and the attribute it is stored under.
COST_KEYS = {"flops": "flops", "params": "params", "latency": "latency_ms"}


@dataclass(frozen=True)
class TrialRecord:
    """One trial as explore recorded it. Costs are of the deployed network: FLOPs are multiply-adds."""
    number: int
    state: str                      # complete, rejected, replaced, pruned, fail, running or waiting
    accuracy: float | None          # the proxy's validation accuracy (the first objective)
    flops: int | None
    params: int | None
    latency_ms: float | None        # predicted on the study's device, where it has one
    family: str | None              # None for a draw rejected before it was priced
    reference: str | None
    digest: str
    reason: str                     # why it was rejected, replaced, stopped early or failed ("" if none)
    val_images: int | None          # the validation split its accuracy was measured on
    rung: int = 0                   # the promotion rung it trained at (explorer.studies.rungs; 0: the proxy's)
    seed_accuracies: tuple[float, ...] = ()  # each seed's accuracy where its rung trained several (their mean is `accuracy`)
    accuracy_std: float | None = None        # their sample standard deviation

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial, objective: str = "flops") -> "TrialRecord":
        """The record of `trial`, in a study whose second objective is `objective`: a cost that
        is not stored as an attribute is read from the objective value of that name only."""
        attrs = trial.user_attrs
        costs = {axis: attrs.get(key) for axis, key in COST_KEYS.items()}
        if costs.get(objective) is None and trial.values is not None and len(trial.values) > 1:
            costs[objective] = trial.values[1]
        return cls(trial.number, state_of(trial), trial.values[0] if trial.values else None,
                   _maybe(int, costs["flops"]), _maybe(int, costs["params"]), _maybe(float, costs["latency"]),
                   attrs.get("family"), attrs.get(REFERENCE), attrs.get("digest", ""),
                   reason_of(trial), attrs.get("val_images"), rung_of(trial), tuple(attrs.get(SEED_ACCURACIES) or ()),
                   attrs.get(ACCURACY_STD))

    def cost(self, axis: str) -> float | None:
        """The cost on `axis` ("flops", "params" or "latency"), None where it wasn't recorded."""
        return {"flops": self.flops, "params": self.params, "latency": self.latency_ms}[axis]


def _maybe(kind, value):
    return None if value is None else kind(value)


def cost_at(trial: optuna.trial.FrozenTrial, objective: str) -> float | None:
    """A trial's stored cost on the study's objective; None before the trial was priced."""
    value = trial.user_attrs.get(COST_KEYS[objective])
    return None if value is None else float(value)


def state_of(trial: optuna.trial.FrozenTrial) -> str:
    """Optuna's state, with PRUNED split by why: a rejected draw, a replaced one, or one stopped early."""
    if trial.state == States.PRUNED and REJECTED in trial.user_attrs:
        return "rejected"
    if trial.state == States.PRUNED and REPLACED in trial.user_attrs:
        return "replaced"
    return trial.state.name.lower()


def reason_of(trial: optuna.trial.FrozenTrial) -> str:
    """Why the trial didn't complete as drawn, in words; "" if nothing went wrong."""
    attrs = trial.user_attrs
    if PRUNED_AT_EPOCH in attrs:
        return f"stopped early (--prune) at epoch {attrs[PRUNED_AT_EPOCH]}"
    return attrs.get(REJECTED) or attrs.get(FAIL_REASON) or attrs.get(REPLACED) or ""


def counts(trials) -> dict[str, int]:
    """How many trials are in each state (`state_of`)."""
    out: dict[str, int] = {}
    for t in trials:
        out[state_of(t)] = out.get(state_of(t), 0) + 1
    return out
