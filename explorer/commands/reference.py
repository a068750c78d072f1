"""`explore train NAME --study STUDY`: a named genotype's proxy, trained with the study's own recipe and
stored in the study as a labelled reference point (user attr `reference=NAME`).

The trial gets the user attrs a search trial gets, through the same code
(`explorer.sweep.objective.Objective.train`: seeded like a trial, per-epoch intermediate values,
history, wall time, failures recorded). It is created straight in the RUNNING
state, never through the queue, so a worker of the same study can't pick it up.
If the genotype belongs to the study's space its trial carries the parameters
that give it (as the classics enqueued at creation do), so samplers learn from
it; otherwise it is stored with no parameters, which optuna-dashboard and the
plots read fine, but NSGA-II/III then find no parameters common to every
completed trial and draw later trials at random.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import optuna

import space
from space.sampling import match, sample

from ..base.errors import UserError
from ..studies import internals
from ..studies.record import OVER_BUDGET, REFERENCE, TrialRecord
from ..studies.store import settings_of
from ..sweep.objective import Objective, TrialFailed
from ..trial.candidate import over_limits, prepare, price, proxy_of, second_objective, trial_attrs

States = optuna.trial.TrialState


@dataclass
class Outcome:
    number: int
    accuracy: float
    flops: int
    params: int
    in_space: bool
    over_budget: bool
    existing: bool = False  # already in the study: nothing was trained


def existing(study, name: str):
    done = [t for t in study.get_trials(deepcopy=False, states=(States.COMPLETE,))
            if t.user_attrs.get(REFERENCE) == name]
    return done[-1] if done else None


def train_reference(study, name: str, g: space.Genotype, device: str = "auto", data_dir=None,
                    force: bool = False) -> Outcome:
    settings = settings_of(study)
    try:
        cx = price(g, settings.resolution)
    except space.GenotypeError as e:
        raise UserError(f"{name} can't run at the study's resolution ({settings.resolution}px): {e}") from None
    params = match(settings.space_doc, g, settings.short_names)
    before = existing(study, name)
    if before is not None and not force:
        r = TrialRecord.of(before, settings.objective)
        return Outcome(r.number, r.accuracy, r.flops, r.params or 0, params is not None,
                       OVER_BUDGET in before.user_attrs, existing=True)
    ctx = prepare(settings, device, data_dir)  # refuses another latency device before anything is priced on it
    over = over_limits(g, cx, settings)
    try:
        proxy, pcx = proxy_of(g, settings, ctx.data)
    except space.GenotypeError as e:
        raise UserError(f"{name}: no proxy of it fits {settings.proxy_resolution}px ({e})") from None
    trial = _new_trial(study, name, params)
    if params is not None:
        # records the params and their distributions on the trial
        drawn = sample(settings.space_doc, trial, settings.short_names)
        if space.digest(drawn.model_copy(update={"resolution": g.resolution})) != space.digest(g):
            study.tell(trial, state=States.FAIL)
            raise UserError(f"{name}: the space's parameters don't reproduce it")  # match() guarantees they do
    attrs = trial_attrs(g, cx, proxy, pcx, settings, ctx.device)
    if over:
        attrs[OVER_BUDGET] = over
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    objective = Objective(ctx)  # no pruning hook: a reference point trains to the end
    try:
        accuracy = objective.train(trial, proxy)
    except TrialFailed as e:
        study.tell(trial, state=States.FAIL)
        raise UserError(f"training {name} failed ({e}); it is recorded in the study as trial {trial.number}") from None
    except optuna.TrialPruned:  # not expected without --prune, but never leave the trial RUNNING
        study.tell(trial, state=States.PRUNED)
        raise UserError(f"training {name} was stopped early; it is recorded as trial {trial.number}") from None
    except BaseException:
        study.tell(trial, state=States.FAIL)
        raise
    study.tell(trial, [accuracy, second_objective(g, cx, settings)])
    return Outcome(trial.number, accuracy, cx.flops, cx.params, params is not None, bool(over))


def _new_trial(study, name: str, params: dict | None) -> optuna.Trial:
    """A RUNNING trial of the study, created directly (not queued), with the params fixed where there are some."""
    template = optuna.trial.FrozenTrial(
        number=-1, state=States.RUNNING, value=None, values=None, datetime_start=datetime.now(),
        datetime_complete=None, params={}, distributions={}, user_attrs={REFERENCE: name},
        system_attrs={"fixed_params": params} if params is not None else {}, intermediate_values={}, trial_id=-1)
    return optuna.Trial(study, internals.create_running_trial(study, template))
