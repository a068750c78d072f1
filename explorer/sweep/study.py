"""A search's study: created with its sampler and the classics enqueued, or resumed after its
settings are checked against the stored ones."""
from __future__ import annotations

import hashlib
import json

import optuna

import space
from space.named import named, names
from space.sampling import load_space, match

from ..base.errors import UserError
from ..base.settings import SAMPLERS, Settings
from ..studies.record import REFERENCE
from ..studies.storage import open_storage
from ..studies.store import metric_names, settings_of, store_settings
from ..trial.candidate import over_limits, price


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
        study.set_metric_names(metric_names(settings))
        store_settings(study, settings)
        for name, params in reference_points(settings):
            study.enqueue_trial(params, user_attrs={REFERENCE: name})
        return study
    stored = settings_of(study)
    refuse_other_settings(study_name, settings, stored)
    changeable = ("trials", "prune", "prune_k", "cudnn_benchmark")  # on resume; they don't change what trials mean
    if any(getattr(settings, key) != getattr(stored, key) for key in changeable):
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
        params = match(settings.space_doc, g, settings.short_names)
        if params is None:
            continue  # not in the space: checked first, since a latency budget measures what it prices
        try:
            if over_limits(g, price(g, settings.resolution), settings):
                continue
        except space.GenotypeError:
            continue  # too small for the study's resolution
        points.append((name, params))
    return points


def resolve_space(name_or_path: str):
    """The space document and its digest."""
    doc = load_space(name_or_path)
    return doc, hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
