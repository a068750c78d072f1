"""Multi-fidelity promotion (`explore search --rungs`), MO-ASHA style (Schmucker et al.; Syne Tune).

Rungs train at rising fidelity (explorer.base.ladder). A genotype that completed rung r is promoted to
rung r + 1 when both hold among the trials completed at rung r:
- it is among the top floor(n / ETA) of them by non-dominated sorting on (accuracy, cost), so a rung never
  holds more than about 1/ETA of the one below (ASHA's rule, which needs no synchronisation);
- it is non-dominated, or can't be told apart within noise from every trial that dominates it
  (explorer.base.dominance.near_front): a cheap network that merely ranks well isn't retrained.

Promotion runs asynchronously: whenever a worker claims work (explorer.scaleout.claim), a due promotion,
from the highest rung down, comes before a new draw. A promotion is a new trial of the same parameters
(explorer.studies.rungs), so it lives in the storage like any trial. A genotype already promoted to a rung
is not promoted there again, unless that trial was interrupted (Ctrl-C), which resuming redoes; a retried
one (heartbeat, SIGTERM) waits in the queue and is claimed first.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..base.dominance import accuracy_noise, near_front, sorted_by_fronts
from ..base.ladder import ETA
from ..scaleout.claim import INTERRUPTED
from ..studies import internals
from ..studies.rungs import ACCURACY_STD, ROOT, RUNG, root_of, rung_of


@dataclass(frozen=True)
class Entry:
    """A genotype at a rung: its root trial's number, accuracy (the mean of its seeds), cost and noise."""
    root: int
    accuracy: float
    cost: float
    noise: float


def to_promote(entries: list[Entry], promoted: set[int], eta: int = ETA) -> list[int]:
    """The roots of `entries` (the trials completed at one rung) due for promotion, best first."""
    points = [(e.accuracy, e.cost) for e in entries]
    near = near_front(points, [e.noise for e in entries])
    top = sorted_by_fronts(points)[:len(entries) // eta]
    return [entries[i].root for i in top if near[i] and entries[i].root not in promoted]


def entry(trial: FrozenTrial) -> Entry:
    attrs = trial.user_attrs
    return Entry(root_of(trial), trial.values[0], trial.values[1],
                 accuracy_noise(trial.values[0], attrs.get("val_images"), attrs.get(ACCURACY_STD)))


def taken(trial: FrozenTrial) -> bool:
    """The trial holds its rung for its genotype: all but one interrupted by Ctrl-C, which resuming redoes."""
    return not (trial.state == TrialState.FAIL and trial.user_attrs.get("fail_reason") == INTERRUPTED)


def due(trials: Iterable[FrozenTrial], rungs: int) -> tuple[FrozenTrial, int] | None:
    """The completed trial to promote next and the rung it goes to (1..`rungs`), the highest rung first."""
    trials = list(trials)
    for rung in reversed(range(rungs)):
        here = {root_of(t): t for t in trials if t.state == TrialState.COMPLETE and rung_of(t) == rung}
        promoted = {root_of(t) for t in trials if rung_of(t) == rung + 1 and taken(t)}
        roots = to_promote([entry(t) for t in here.values()], promoted)
        if roots:
            return here[roots[0]], rung + 1
    return None


def promote(study: optuna.Study, rungs: int) -> optuna.Trial | None:
    """Under the claim lock: a RUNNING trial for the next promotion (a queued retry of one first), or None."""
    trials = study.get_trials(deepcopy=False)
    store = internals.storage(study)
    for t in trials:
        if t.state == TrialState.WAITING and rung_of(t) and store.set_trial_state_values(internals.trial_id(t),
                                                                                         TrialState.RUNNING):
            return optuna.Trial(study, internals.trial_id(t))
    found = due(trials, rungs)
    if found is None:
        return None
    source, rung = found
    attrs = {RUNG: rung, ROOT: root_of(source),
             **{k: source.user_attrs[k] for k in ("reference",) if k in source.user_attrs}}
    template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                           datetime_start=datetime.now(), datetime_complete=None, params=source.params,
                           distributions=source.distributions, user_attrs=attrs, system_attrs={},
                           intermediate_values={}, trial_id=-1)
    return optuna.Trial(study, internals.create_running_trial(study, template))


def pending(study: optuna.Study, rungs: int) -> bool:
    """Whether a promotion waits to be trained (so a study whose rung-0 trials are all done isn't finished)."""
    trials = study.get_trials(deepcopy=False)
    return bool(rungs) and (any(t.state == TrialState.WAITING and rung_of(t) for t in trials)
                            or due(trials, rungs) is not None)
