"""Where studies live and what they hold: storage URLs, settings, and their trials.

A study's settings (space, budget, dataset, recipe...) are stored in the study
itself, so a rerun resumes it and a worker joins it without re-typing them: a
short JSON user attr (`explore:settings`, what optuna-dashboard shows on the
study page) and the space document, which can run to tens of kilobytes, as a
system attr keyed by its digest (out of the dashboard's way). Studies made
before the split hold the document inside the settings; both forms are read.
Settings that change what a trial's numbers mean (COMPARABLE) can't change on
resume: incomparable trials are never mixed.
"""
from __future__ import annotations

import json
from pathlib import Path

import optuna

from ..base.errors import UserError
from ..base.settings import Settings
from . import internals
from .record import counts
from .rungs import rung_of
from .storage import open_storage, redact

STUDIES_DIR = Path("studies")
SETTINGS_KEY = "explore:settings"
SPACE_KEY = "explore:space:"  # + the space digest: a system attr holding the space document
METRICS = ["proxy accuracy", "FLOPs (multiply-adds)"]
SECOND = {"flops": METRICS[1], "params": "parameters", "latency": "latency (ms, predicted)"}  # by Settings.objective


def metric_names(settings: Settings) -> list[str]:
    return [METRICS[0], SECOND[settings.objective]]


def store_settings(study, settings: Settings) -> None:
    """The settings as a short user attr, the space document as a system attr named by its digest."""
    internals.set_study_system_attr(study, SPACE_KEY + settings.space_digest,
                                    json.dumps(settings.space_doc, separators=(",", ":")))
    study.set_user_attr(SETTINGS_KEY, settings.to_json())


def study_dir(study: str) -> Path:
    return STUDIES_DIR / study


def storage_url(study: str, storage: str | None) -> str:
    """The default is SQLite at studies/<study>/study.db."""
    if storage:
        return storage
    return f"sqlite:///{study_dir(study) / 'study.db'}"


def load_study(study: str, storage: str | None):
    """An existing study, with a clear error if there is none."""
    url = storage or existing_default(study)
    store = open_storage(url)
    try:
        return optuna.load_study(study_name=study, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)] if store else []
        hint = f"; studies there: {', '.join(names)}" if names else ""
        raise UserError(f"no study named '{study}' in {redact(url)}{hint}") from None


def existing_default(study: str) -> str:
    path = study_dir(study) / "study.db"
    if not path.exists():
        known = sorted(d.parent.name for d in STUDIES_DIR.glob("*/study.db"))
        hint = f"; known studies: {', '.join(sorted(known))}" if known else "; run `explore search` first"
        raise UserError(f"no study named '{study}' under {STUDIES_DIR}/{hint}")
    return f"sqlite:///{path}"


def settings_of(study) -> Settings:
    text = study.user_attrs.get(SETTINGS_KEY)
    if text is None:
        raise UserError(f"study '{study.study_name}' wasn't made by explore (it has no settings)")
    try:
        settings = Settings.from_json(text)
    except (ValueError, TypeError) as e:  # e.g. a recipe key this version doesn't know
        raise UserError(f"study '{study.study_name}' holds settings this explore can't read ({e})") from None
    if settings.space_doc is None and settings.space_digest:  # stored apart (older studies hold it inline)
        stored = internals.study_system_attrs(study).get(SPACE_KEY + settings.space_digest)
        if stored is None:
            raise UserError(f"study '{study.study_name}' has lost its space document "
                            f"(system attr {SPACE_KEY}{settings.space_digest})")
        settings.space_doc = json.loads(stored)
    return settings


def completed(study) -> list:
    """The completed trials that count towards `--trials`: rung 0's (promotions train them again)."""
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if not rung_of(t)]


def rejected_count(study) -> int:
    return counts(study.get_trials(deepcopy=False)).get("rejected", 0)


