"""Optuna storages from a URL: SQLite, PostgreSQL and other databases, or a journal file.

A foreign or corrupt SQLite file is refused, never touched; a database URL's password
is never printed (`redact`); database storages that run trials get heartbeats and the
retry-once callback that re-enqueues a trial whose worker died (explorer.scaleout.claim).
"""
from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from ..base.errors import UserError

MAX_RETRY = 1  # a trial whose worker died is trained once more, then left failed


def retry_callback():
    """Optuna's retry-once callback under its current name (RetryFailedTrialCallback before 4.9)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=MAX_RETRY)


def open_storage(url: str, heartbeat: tuple[int, int] | None = None):
    """An Optuna storage for the URL; foreign or corrupt SQLite files are refused, never touched.

    `heartbeat` = (interval, grace) seconds turns on heartbeats for database storages: a running trial
    without one for the grace period is failed and retried once (see explorer.scaleout.claim).
    """
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        _check_sqlite(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        if not path:
            raise UserError("--storage: journal:PATH needs a file path, e.g. journal:/shared/studies/big.log")
        try:
            storage = optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        except OSError as e:
            raise UserError(f"--storage: can't open {url}: {e.strerror}") from None
        storage.explore_journal_path = path  # the claim lock of explorer.scaleout.claim lives next to it
        return storage
    kwargs = {}
    if heartbeat:
        callback = ("heartbeat_stale_trial_callback"  # Optuna >= 4.9; failed_trial_callback before
                    if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                    else "failed_trial_callback")
        kwargs = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1], callback: retry_callback()}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
    except Exception as e:  # noqa: BLE001 - any driver error becomes one clear line
        hint = (" (for PostgreSQL use postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)"
                if isinstance(e, ModuleNotFoundError) and "psycopg2" in str(e) else "")
        raise UserError(f"--storage: can't open {redact(url)}: {_first_line(e)}{hint}") from None


def _engine_kwargs(url: str) -> dict:
    # SQLite: wait for a lock instead of failing at once when several workers write.
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):  # an unreachable host fails in 10 s, not minutes
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def _check_sqlite(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        raise UserError(f"--storage: {path} is not an SQLite database; refusing to overwrite it "
                        "(move it away or pick another --study)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as e:
        raise UserError(f"--storage: {path} is a corrupt SQLite database ({e}); refusing to touch it") from None
    if tables and not {"studies", "trials", "version_info"} <= tables:
        raise UserError(f"--storage: {path} is an SQLite database but not an Optuna study "
                        f"(tables: {', '.join(sorted(tables)[:5])}); refusing to touch it")


def redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__


