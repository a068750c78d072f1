"""Every use of Optuna's private API, in one place, each with why it is needed.

Optuna's public API covers a single process that calls `study.optimize`. explore's
workers claim, release and retry trials themselves (explorer.scaleout.claim), record
multi-objective learning curves and store a space document out of the dashboard's
way; each of those needs a storage call that only a private attribute reaches.
"""
from __future__ import annotations

import json

import optuna
import sqlalchemy
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._rdb.models import TrialModel, TrialUserAttributeModel
from sqlalchemy.dialects import postgresql, sqlite


def storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage: claims, releases and reclaims write trials no `optuna.Trial` object holds."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's key of a trial (numbers are per study; storage calls take ids)."""
    return trial._trial_id


def study_system_attrs(study: optuna.Study) -> dict:
    """System attrs: `Study.system_attrs` was removed in Optuna 3.x; the dashboard doesn't show them."""
    return storage(study).get_study_system_attrs(study_id(study))


def set_study_system_attr(study: optuna.Study, key: str, value) -> None:
    storage(study).set_study_system_attr(study_id(study), key, value)


def report(trial: optuna.Trial, step: int, value: float) -> None:
    """An intermediate value: `Trial.report` refuses multi-objective studies; the storage call doesn't."""
    storage(trial.study).set_trial_intermediate_value(trial_id(trial), step, value)


def rdb_backend(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The RDB storage Optuna wraps in its cache, whose engine the claim lock needs; None for other storages."""
    backend = getattr(storage(study), "_backend", None)  # a JournalStorage has one too: its log file
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def heartbeat_interval(study: optuna.Study) -> int | None:
    """Seconds between heartbeats, or None: Optuna exposes heartbeat storages only by a private class."""
    store = storage(study)
    return store.get_heartbeat_interval() if isinstance(store, BaseHeartbeat) else None


def create_running_trial(study: optuna.Study, template: optuna.trial.FrozenTrial) -> int:
    """A trial created RUNNING from a template, so no worker's `ask` can take it from the queue."""
    return storage(study).create_new_trial(study_id(study), template_trial=template)


_UPSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}  # dialects with INSERT ... ON CONFLICT


def set_user_attrs(trial: optuna.Trial, attrs: dict) -> None:
    """Many user attributes of a running trial in one transaction. `Trial.set_user_attr` commits each on its
    own (two SQL statements and a commit apiece): at a search trial's 22 attributes, 40% of its host time on
    SQLite, 12% on PostgreSQL (benchmarks/RESULTS.md). Rows as Optuna writes them (JSON in its table); other
    storages and databases get one call per attribute."""
    backend = rdb_backend(trial.study)
    upsert = _UPSERTS.get(backend.engine.dialect.name) if backend else None
    if upsert is None or not attrs:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    table = TrialUserAttributeModel.__table__
    rows = [{"trial_id": trial_id(trial), "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    insert = upsert(table).values(rows)
    with backend.engine.begin() as conn:
        state = conn.execute(sqlalchemy.select(TrialModel.state).where(TrialModel.trial_id == trial_id(trial)))
        backend.check_trial_is_updatable(trial_id(trial), state.scalar_one())  # as set_user_attr: running only
        conn.execute(insert.on_conflict_do_update(index_elements=[table.c.trial_id, table.c.key],
                                                  set_={"value_json": insert.excluded.value_json}))
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what trial.user_attrs reads, as set_user_attr keeps it
