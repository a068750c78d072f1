"""One search trial, and the loop that runs them: draw, price, reject or adapt, train, record.

Each trial draws a genotype through the trial's suggest API. A draw that is
impossible or over budget (FLOPs are multiply-adds of the deployed network at
the study's resolution with 1000 classes, priced analytically) is *rejected*
before anything is built: the trial is stored as pruned with the reason in
`rejected`, and the next trial draws again. Only trained trials count towards
`--trials`, so no completed trial exceeds the budget.

Pre-screening and early stopping are strategies the Objective is given (`hooks`), as
Optuna's samplers are given theirs: explorer.sweep.prescreen and explorer.sweep.pruning.
"""
from __future__ import annotations

import statistics
import time
import traceback
import warnings
from dataclasses import replace
from typing import Callable

import optuna
import torch

import space
from space.sampling import sample

from ..base.errors import UserError
from ..scaleout.claim import requeue_interrupted_references, work
from ..studies import internals
from ..studies.record import FAIL_REASON, REJECTED
from ..studies.rungs import ACCURACY_STD, SEED_ACCURACIES, rung_of
from ..studies.store import settings_of
from ..trial import latency
from ..trial.candidate import (
    Context,
    at_rung,
    over_limits,
    price,
    proxy_of,
    second_objective,
    trial_attrs,
    trial_seed,
)
from ..trial.trainer import Diverged, train
from . import prescreen, promotion, pruning

MAX_REJECTIONS_IN_A_ROW = 2000
MAX_FAILURES_IN_A_ROW = 5

Prescreen = Callable[[optuna.Trial, space.Genotype, space.Complexity], None]  # may raise Replaced
Prune = Callable[[optuna.Trial, int, float], None]  # after epoch e at accuracy a; may raise PrunedAtEpoch


class Rejected(optuna.TrialPruned):
    """A draw that is never trained: impossible, over budget or over the parameter cap."""


class TrialFailed(Exception):
    """Training went wrong (NaN, out of memory, an error); recorded, and the study goes on."""


warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class Objective:
    """One trial: draw, price, reject or adapt to a proxy, train, record."""

    def __init__(self, ctx: Context, progress=None, prescreen: Prescreen | None = None, prune: Prune | None = None):
        self.ctx = ctx
        self.prescreen, self.prune = prescreen, prune
        self.space = ctx.settings.space_doc
        self.progress = progress
        self.rejections_in_a_row = 0
        self.failures_in_a_row = 0
        self.stopped = ""

    def __call__(self, trial: optuna.Trial):
        try:
            return self._trial(trial)
        except (UserError, optuna.TrialPruned, TrialFailed):
            raise
        except Exception as e:  # noqa: BLE001 - a bug met by one draw fails that trial, not the study
            self._error(trial, e)

    def _trial(self, trial: optuna.Trial):
        rung = rung_of(trial)  # a promotion (explorer.sweep.promotion) trains its genotype again, at its rung
        ctx = at_rung(self.ctx, rung)
        s = ctx.settings
        g, cx = self._draw(trial)
        if self.prescreen and not rung:
            self.prescreen(trial, g, cx)  # may enqueue a better-scoring draw and raise Replaced
        try:
            proxy, pcx = proxy_of(g, s, ctx.data)
        except space.GenotypeError as e:
            self._reject(trial, f"no proxy fits {s.proxy_resolution}px: {e}")
        internals.set_user_attrs(trial, trial_attrs(g, cx, proxy, pcx, s, ctx.device))
        if self.progress:
            self.progress.start_trial(trial.number, (g.family or "custom") + (f", rung {rung}" if rung else ""),
                                      cx.flops)
        seeds = s.rungs[rung - 1]["seeds"] if rung else 1
        accuracy = self.train_seeds(trial, proxy, ctx, seeds) if seeds > 1 else self.train(trial, proxy, ctx)
        return accuracy, second_objective(g, cx, s)

    def _draw(self, trial):
        s = self.ctx.settings
        try:
            g = sample(self.space, trial, s.short_names)
            cx = price(g, s.resolution)
        except space.GenotypeError as e:
            self._reject(trial, f"impossible draw: {e}")
        reason = over_limits(g, cx, s)
        if reason:
            self._reject(trial, reason)
        self.rejections_in_a_row = 0
        return g, cx

    def _reject(self, trial, reason: str):
        trial.set_user_attr(REJECTED, reason)
        self.rejections_in_a_row += 1
        if self.progress:
            self.progress.rejected()
        if self.rejections_in_a_row >= MAX_REJECTIONS_IN_A_ROW:
            raise UserError(f"{MAX_REJECTIONS_IN_A_ROW} draws in a row were rejected (last: {reason}); "
                            "the budget is too small for this space: raise --budget or pick another --space")
        raise Rejected(reason)

    def train(self, trial, proxy, ctx: Context | None = None, seed: int = 0) -> float:
        """Train a trial's proxy from the trial's seed (shifted by `seed`, another seed of a rung), recording
        its learning curve; its accuracy. `ctx`: a rung's (explorer.trial.candidate.at_rung); the study's if None."""
        ctx = ctx or self.ctx
        torch.manual_seed(trial_seed(ctx.settings.seed + seed, trial.number))
        recipe = replace(ctx.recipe, seed=ctx.recipe.seed + seed)
        prune = None if rung_of(trial) else self.prune  # epochs of other rungs don't compare
        started = time.perf_counter()
        history: list[float] = []
        measured: dict = {}

        def on_epoch(epoch: int, acc: float) -> None:
            history.append(acc)
            internals.report(trial, epoch, acc)
            if self.progress:
                self.progress.epoch(epoch, recipe.epochs, acc)
            if prune:
                prune(trial, epoch, acc)

        try:
            model = space.build(proxy, ctx.data.num_classes, ctx.data.in_channels).to(ctx.device)
            space.network.stochastic_depth(model, ctx.settings.stochastic_depth)
            with latency.training():  # never beside ops being timed (explorer.trial.latency.lock)
                result = train(model, ctx.data, recipe, ctx.device, on_epoch=on_epoch,
                               precision=ctx.settings.precision, autotune=ctx.settings.cudnn_benchmark)
            measured = {"accuracy": result.val_accuracy,
                        "val_images": len(ctx.data.val_y),  # what the accuracy's noise floor rests on
                        "train_images_per_s": result.train_images_per_s}
        except Diverged as e:
            self._fail(trial, f"diverged: {e}")
        except torch.cuda.OutOfMemoryError:
            self._fail(trial, "out of memory")
        finally:  # any other error is the trial's failure too, recorded by __call__
            internals.set_user_attrs(trial, {"wall_time": time.perf_counter() - started, "history": history,
                                             **measured})
        self.failures_in_a_row = 0
        return result.val_accuracy

    def train_seeds(self, trial, proxy, ctx: Context, seeds: int) -> float:
        """A rung's seeds each train the proxy; the accuracy is their mean, recorded with each and their std."""
        started = time.perf_counter()
        accuracies = [self.train(trial, proxy, ctx, seed) for seed in range(seeds)]
        mean = statistics.fmean(accuracies)
        internals.set_user_attrs(trial, {SEED_ACCURACIES: accuracies, ACCURACY_STD: statistics.stdev(accuracies),
                                         "accuracy": mean, "wall_time": time.perf_counter() - started})
        return mean

    def _error(self, trial, e: Exception):
        """An unexpected exception: its first line is the reason, its traceback is kept beside it."""
        first = str(e).splitlines()[0] if str(e) else ""
        reason = "out of memory" if "out of memory" in str(e) else f"{type(e).__name__}: {first}"
        trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
        self._fail(trial, reason)

    def _fail(self, trial, reason: str):
        trial.set_user_attr(FAIL_REASON, reason)
        if self.progress:
            self.progress.failed(reason)
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            # the failure is recorded; run() stops after it and the next run starts afresh
            self.stopped = f"{MAX_FAILURES_IN_A_ROW} trials in a row failed (last: {reason})"
        raise TrialFailed(reason)


def hooks(ctx: Context) -> dict:
    """The pre-screening and pruning strategies a study's settings ask for, for `Objective`."""
    s = ctx.settings
    return {"prescreen": (lambda trial, g, cx: prescreen.screen(trial, g, cx, ctx)) if s.prescreen > 1 else None,
            "prune": ((lambda trial, epoch, acc: pruning.check(trial, epoch, ctx.recipe.epochs, acc, s.prune_k,
                                                               s.objective))
                      if s.prune == "pareto" else None)}


def run(study, ctx: Context, progress=None):
    """Train until the study holds its target of completed trials (shared by every worker).

    Trials are claimed as explorer.scaleout.claim describes, so any number of processes may run this on
    one study at once and the study ends with exactly its target of completed trials. Returns the
    claim.Outcome (status "held": a journal study whose last slots are held by running trials).
    """

    def target() -> int:  # read each time: `explore search --study S --trials N` may raise it meanwhile
        try:
            return settings_of(study).trials
        except Exception:  # noqa: BLE001 - e.g. a study made by hand
            return ctx.settings.trials

    requeue_interrupted_references(study)
    objective = Objective(ctx, progress, **hooks(ctx))
    rungs = len(ctx.settings.rungs)
    outcome = work(study, objective, target, callbacks=[progress.trial_done] if progress else [],
                   catch=(TrialFailed,), stop=lambda: bool(objective.stopped),
                   on_wait=getattr(progress, "waiting", None),
                   promote=(lambda study: promotion.promote(study, rungs)) if rungs else None)
    if objective.stopped:
        raise UserError(f"stopped: {objective.stopped}; check the recipe (e.g. a smaller --lr) and rerun to resume")
    return outcome


