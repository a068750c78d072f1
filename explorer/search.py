"""`explore search`: Optuna samples the grammar under a FLOP budget and trains proxies.

Each trial draws a genotype through the trial's suggest API. A draw that is
impossible or over budget (FLOPs are multiply-adds of the deployed network at
the study's resolution with 1000 classes, priced analytically) is *rejected*
before anything is built: the trial is stored as pruned with the reason in
`rejected`, and the next trial draws again. Only trained trials count towards
`--trials`, so no completed trial exceeds the budget.
"""
from __future__ import annotations

import math
import time
import traceback
import warnings
from dataclasses import dataclass

import optuna
import torch

import space
from space.named import named, names
from space.sampling import load_space, match, sample

from . import data as datasets
from .budget import format_flops
from .errors import UserError
from .proxy import make_proxy
from .stats import design_axes
from .study import METRICS, Settings, open_storage, settings_of, store_settings
from .trainer import Diverged, Recipe, resolve_device, set_cpu_threads, train

DEPLOY_CLASSES = 1000
MAX_REJECTIONS_IN_A_ROW = 2000
MAX_FAILURES_IN_A_ROW = 5
SAMPLERS = ("nsga2", "tpe", "random", "nsga3", "gp")


class Rejected(optuna.TrialPruned):
    """A draw that is never trained: impossible, over budget or over the parameter cap."""


class TrialFailed(Exception):
    """Training went wrong (NaN, out of memory, an error); recorded, and the study goes on."""


warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def make_sampler(name: str, seed: int):
    factories = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "nsga3": lambda: optuna.samplers.NSGAIIISampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    if name not in factories:
        raise UserError(f"--sampler: unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    try:
        return factories[name]()
    except (AttributeError, ImportError) as e:
        raise UserError(f"--sampler: '{name}' isn't available in optuna {optuna.__version__} ({e})") from None


def open_study(study_name: str, url: str, settings: Settings, create: bool = True, heartbeat=None):
    """Create the study, or resume it after checking its settings match; enqueue the classics on creation.

    `heartbeat` = (interval, grace) seconds, for the storage of a study that trials will run on.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, heartbeat)
    sampler = make_sampler(settings.sampler, settings.seed)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    except KeyError:
        if not create:
            raise UserError(f"no study named '{study_name}'") from None
        study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                                    directions=["maximize", "minimize"])
        study.set_metric_names(METRICS)
        store_settings(study, settings)
        for name, params in reference_points(settings):
            study.enqueue_trial(params, user_attrs={"reference": name})
        return study
    stored = settings_of(study)
    refuse_other_settings(study_name, settings, stored)
    if settings.trials != stored.trials or (settings.prune, settings.prune_k) != (stored.prune, stored.prune_k):
        store_settings(study, settings)
    return study


def refuse_other_settings(study_name: str, settings: Settings, stored: Settings) -> None:
    diffs = settings.differences(stored)
    if diffs:
        raise UserError(f"study '{study_name}' was made with other settings (stored → asked: {'; '.join(diffs)}); "
                        f"to resume it, run `explore search --study {study_name}` (left-out flags come from the "
                        "study), or pick another --study")


def reference_points(settings: Settings) -> list[tuple[str, dict]]:
    """The named genotypes that belong to the space and fit the budget, with the params that give them."""
    points = []
    for name in names():
        g = named(name)
        cx = space.complexity(g, settings.resolution, DEPLOY_CLASSES, breakdown=False) if _fits_size(g, settings) else None
        if cx is None or cx.flops > settings.budget or (settings.max_params and cx.params > settings.max_params):
            continue
        params = match(settings.space_doc, g, settings.short_names)
        if params is not None:
            points.append((name, params))
    return points


def _fits_size(g, settings: Settings) -> bool:
    try:
        space.complexity(g, settings.resolution, DEPLOY_CLASSES, breakdown=False)
        return True
    except space.GenotypeError:
        return False


@dataclass
class Context:
    settings: Settings
    data: datasets.Splits
    recipe: Recipe
    device: torch.device


def prepare(settings: Settings, device: str, data_dir=None) -> Context:
    dev = resolve_device(device)
    if dev.type == "cpu":
        set_cpu_threads()
    data = load_data(settings, data_dir)
    recipe = Recipe.from_dict(settings.recipe)
    check_splits(data, recipe)
    return Context(settings, data, recipe, dev)


def load_data(settings: Settings, data_dir=None) -> datasets.Splits:
    """The study's proxy data: its dataset at the proxy resolution, split as its settings say."""
    return datasets.load(settings.dataset, resolution=settings.proxy_resolution, data_dir=data_dir,
                         seed=settings.seed, val_images=settings.val_images, train_images=settings.train_images)


def check_splits(data: datasets.Splits, recipe: Recipe) -> None:
    """Refuse, before any trial, a dataset whose splits can't train or validate a proxy."""
    if len(data.train_y) < recipe.batch_size:
        raise UserError(f"--batch-size: {recipe.batch_size} is more than the {len(data.train_y)} training images "
                        f"of {data.name} (after holding out validation); use --batch-size {len(data.train_y)} "
                        "or less, or add images")
    if len(data.val_y) == 0:
        raise UserError(f"--dataset: {data.name} has too few images to hold out a validation split; add images")


class Objective:
    """One trial: draw, price, reject or adapt to a proxy, train, record."""

    def __init__(self, ctx: Context, progress=None):
        self.ctx = ctx
        self.space = ctx.settings.space_doc
        self.progress = progress
        self.rejections_in_a_row = 0
        self.failures_in_a_row = 0
        self.stopped = ""

    def __call__(self, trial: optuna.Trial):
        s = self.ctx.settings
        g, cx = self._draw(trial)
        if s.prescreen > 1:
            from .zero_cost import screen
            screen(trial, g, cx, self.ctx)  # may enqueue a better-scoring draw and raise Replaced
        try:
            proxy = make_proxy(g, s.proxy_resolution, s.proxy_width, s.proxy_depth,
                               self.ctx.data.in_channels, self.ctx.data.num_classes)
            pcx = space.complexity(proxy, breakdown=False, in_channels=self.ctx.data.in_channels)
        except space.GenotypeError as e:
            self._reject(trial, f"no proxy fits {s.proxy_resolution}px: {e}")
        for key, value in {"genotype": space.schema.canonical_json(g), "digest": space.digest(g),
                           **design_axes(g), "flops": cx.flops, "params": cx.params,
                           "proxy_genotype": space.schema.canonical_json(proxy), "proxy_flops": pcx.flops,
                           "proxy_params": pcx.params, "dataset": s.dataset, "device": str(self.ctx.device)}.items():
            trial.set_user_attr(key, value)
        if self.progress:
            self.progress.start_trial(trial.number, g.family or "custom", cx.flops)
        accuracy = self._train(trial, proxy)
        return accuracy, cx.flops

    def _draw(self, trial):
        s = self.ctx.settings
        try:
            g = sample(self.space, trial, s.short_names)
            cx = space.complexity(g, s.resolution, DEPLOY_CLASSES, breakdown=False)
        except space.GenotypeError as e:
            self._reject(trial, f"impossible draw: {e}")
        if cx.flops > s.budget:
            self._reject(trial, f"over budget: {format_flops(cx.flops)} > {format_flops(s.budget)}")
        if s.max_params and cx.params > s.max_params:
            self._reject(trial, f"over the parameter cap: {cx.params:,} > {s.max_params:,}")
        self.rejections_in_a_row = 0
        return g, cx

    def _reject(self, trial, reason: str):
        trial.set_user_attr("rejected", reason)
        self.rejections_in_a_row += 1
        if self.progress:
            self.progress.rejected()
        if self.rejections_in_a_row >= MAX_REJECTIONS_IN_A_ROW:
            raise UserError(f"{MAX_REJECTIONS_IN_A_ROW} draws in a row were rejected (last: {reason}); "
                            "the budget is too small for this space: raise --budget or pick another --space")
        raise Rejected(reason)

    def _train(self, trial, proxy) -> float:
        ctx = self.ctx
        torch.manual_seed(ctx.settings.seed * 100_003 + trial.number)
        started = time.perf_counter()
        history: list[float] = []

        def on_epoch(epoch: int, acc: float) -> None:
            history.append(acc)
            # Trial.report refuses multi-objective studies; the storage call underneath it doesn't.
            trial.storage.set_trial_intermediate_value(trial._trial_id, epoch, acc)
            if self.progress:
                self.progress.epoch(epoch, ctx.recipe.epochs, acc)
            if ctx.settings.prune == "pareto":
                from .pruning import check
                check(trial, epoch, ctx.recipe.epochs, acc, ctx.settings.prune_k)  # raises PrunedAtEpoch

        try:
            model = space.build(proxy, ctx.data.num_classes, ctx.data.in_channels).to(ctx.device)
            space.network.stochastic_depth(model, ctx.settings.stochastic_depth)
            result = train(model, ctx.data, ctx.recipe, ctx.device, on_epoch=on_epoch)
        except Diverged as e:
            self._fail(trial, f"diverged: {e}")
        except torch.cuda.OutOfMemoryError:
            self._fail(trial, "out of memory")
        except (KeyboardInterrupt, UserError, optuna.TrialPruned):
            raise
        except Exception as e:  # noqa: BLE001 - any failure is recorded and the study goes on
            reason = "out of memory" if "out of memory" in str(e) else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            self._fail(trial, reason)
        finally:
            trial.set_user_attr("wall_time", time.perf_counter() - started)
            trial.set_user_attr("history", history)
        trial.set_user_attr("accuracy", result.val_accuracy)
        trial.set_user_attr("val_images", len(ctx.data.val_y))  # what the accuracy's noise floor rests on
        trial.set_user_attr("train_images_per_s", result.train_images_per_s)
        self.failures_in_a_row = 0
        return result.val_accuracy

    def _fail(self, trial, reason: str):
        trial.set_user_attr("fail_reason", reason)
        if self.progress:
            self.progress.failed(reason)
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            # the failure is recorded; run() stops after it and the next run starts afresh
            self.stopped = f"{MAX_FAILURES_IN_A_ROW} trials in a row failed (last: {reason})"
        raise TrialFailed(reason)


def completed(study) -> list:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def run(study, ctx: Context, progress=None):
    """Train until the study holds its target of completed trials (shared by every worker).

    Trials are claimed as explorer.workers describes, so any number of processes may run this on one
    study at once and the study ends with exactly its target of completed trials. Returns the
    workers.Outcome (status "held": a journal study whose last slots are held by running trials).
    """
    from .workers import requeue_interrupted_references, work

    def target() -> int:  # read each time: `explore search --study S --trials N` may raise it meanwhile
        try:
            return settings_of(study).trials
        except Exception:  # noqa: BLE001 - e.g. a study made by hand
            return ctx.settings.trials

    requeue_interrupted_references(study)
    objective = Objective(ctx, progress)
    outcome = work(study, objective, target, callbacks=[progress.trial_done] if progress else [],
                   catch=(TrialFailed,), stop=lambda: bool(objective.stopped),
                   on_wait=getattr(progress, "waiting", None))
    if objective.stopped:
        raise UserError(f"stopped: {objective.stopped}; check the recipe (e.g. a smaller --lr) and rerun to resume")
    return outcome


def rejected_count(study) -> int:
    return sum("rejected" in t.user_attrs for t in study.get_trials(deepcopy=False))


def nearest_named(g: space.Genotype, flops: int, params: int, resolution: int) -> str:
    """The classic closest to a genotype: same family first, then by log-FLOPs and log-params."""
    best, best_d = "", math.inf
    for name in names():
        ref = named(name)
        try:
            cx = _classic_cost(name, resolution)
        except space.GenotypeError:
            continue
        d = abs(math.log(cx[0] / flops)) + abs(math.log(cx[1] / params)) + (0 if ref.family == g.family else 10)
        if d < best_d:
            best, best_d = name, d
    return best


_CLASSIC_COSTS: dict[tuple[str, int], tuple[int, int]] = {}


def _classic_cost(name: str, resolution: int) -> tuple[int, int]:
    if (name, resolution) not in _CLASSIC_COSTS:
        cx = space.complexity(named(name), resolution, DEPLOY_CLASSES, breakdown=False)
        _CLASSIC_COSTS[name, resolution] = (cx.flops, cx.params)
    return _CLASSIC_COSTS[name, resolution]


def resolve_space(name_or_path: str):
    """The space document and its digest."""
    doc = load_space(name_or_path)
    import hashlib
    import json
    return doc, hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
