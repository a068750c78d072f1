"""Many workers, one study: `explore search --jobs N` and `explore worker`.

Workers never talk to each other. They share the study through its storage,
read the settings (space, budget, dataset, recipe) from the study itself, and
each one claims, trains and records one trial at a time until the study holds
its target of completed trials.

Storages
--------
* SQLite (``sqlite:///studies/NAME/study.db``, the default): one machine.
  ``--jobs N`` runs N worker processes on it. Writes are small and rare
  (a trial's attributes, one value per epoch, a heartbeat a minute) and every
  connection waits up to 60 s for the file lock, so 4 local workers never see
  "database is locked"; SQLite is kept for local runs (tested with 4 workers).
  Don't put SQLite on a network file system.
* PostgreSQL (``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``): many
  machines. Heartbeats and retries as below.
* Journal (``journal:PATH``): Optuna's JournalStorage, an append-only log file
  guarded by an O_EXCL lock file, for clusters with a shared file system and no
  database server. It has **no heartbeat**: a worker that is killed (SIGKILL,
  OOM killer, a node that dies) leaves its trial RUNNING forever, because
  nothing can tell a dead worker from a slow one. Such a trial never counts as
  completed, but it keeps holding its slot (see the claim protocol), so the
  study finishes one trial short per killed worker: the other workers finish
  everything else and exit rather than wait forever, and say so. Once no worker
  is running, ``explore worker --study NAME --storage journal:PATH --reclaim``
  marks the orphaned RUNNING trials failed ("orphaned: released by --reclaim"),
  enqueues each of their genotypes once more (as a heartbeat would have), and
  trains what is missing. Don't use ``--reclaim`` while workers are running:
  it would release their trials too (their results are then dropped, so the
  count stays exact, but the work is lost).

The claim protocol: an exact number of completed trials
-------------------------------------------------------
Optuna's ``MaxTrialsCallback`` overshoots when several workers finish at once.
Instead a worker *claims* a trial under a study-wide lock: it counts COMPLETE
trials plus RUNNING trials claimed by workers, and asks Optuna for a trial only
if that sum is below the target; the claim is marked on the trial (system
attribute ``explore:worker`` = host:pid) inside the same lock. So at any time
completed + claimed <= target, and every COMPLETE trial was claimed: the final
count is exact. A claimed trial that is rejected (over budget) or fails frees
its slot. With promotion (``--rungs``) only rung-0 trials count: a promotion that is due
(explorer.sweep.promotion) is claimed first, and a worker waits while a running
trial may still make one due. When every remaining slot is held by running trials, a worker on a
heartbeat storage waits (one of them may fail, or its worker may have died);
on the journal it exits. The lock is ``pg_advisory_xact_lock`` on PostgreSQL
(released when the connection drops), a POSIX ``lockf`` on ``study.db.claims``
for SQLite (released when the process dies), and an O_EXCL lock file
``PATH.claims.lock`` on the journal (broken after 30 s if its holder died).
Other databases (e.g. MySQL) get no lock: counts stay exact with one worker,
but may overshoot by up to workers-1 with several.

Heartbeats and retries (SQLite and PostgreSQL)
----------------------------------------------
A worker records a heartbeat for its running trial every ``--heartbeat``
seconds (60). A trial without a heartbeat for ``--grace`` seconds (120) is
failed by the next worker that claims or waits, and its parameters are
enqueued once more (``RetryHeartbeatStaleTrialCallback(max_retry=1)``, the
successor of ``RetryFailedTrialCallback``): the retry re-trains the same
genotype, since every draw goes through the trial's suggest API and a trial
that already holds a parameter gets it back. The retry records the original in
the system attributes ``failed_trial`` and ``retry_history``.

Stopping
--------
* SIGTERM (a scheduler's preemption): the running trial is released (marked
  FAIL with ``fail_reason`` "worker stopped (SIGTERM)" and enqueued once more
  for another worker, as a stale one would be) and the worker exits with 143.
* Ctrl-C (SIGINT): the running trial is marked FAIL ("interrupted") and the
  worker exits with 130; rerunning resumes.
Both signals are deferred while a worker holds the claim lock or records a
result, so a claim is never half made. With ``--jobs N`` the children leave the
terminal's process group: the parent forwards Ctrl-C and SIGTERM to them, and
they get SIGTERM if the parent dies.

With several workers the draws are not reproducible (each worker's sampler is
seeded at random, so concurrent workers don't draw the same genotype); a single
worker (`explore search` without ``--jobs``) keeps ``--seed``.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import optuna
import sqlalchemy
from optuna.storages.journal import JournalFileOpenLock
from optuna.trial import TrialState

from ..studies import internals
from ..studies.record import FAIL_REASON, REFERENCE
from ..studies.rungs import rung_of
from ..studies.storage import retry_callback
from .signals import WorkerStopped, deferred_signals, raise_pending

CLAIM_KEY = "explore:worker"
DEFAULT_HEARTBEAT = (60, 120)   # seconds: interval, grace period
SIGTERM_REASON = "worker stopped (SIGTERM)"
INTERRUPTED = "interrupted"  # Ctrl-C: the trial is failed, not retried (but see requeue_interrupted_references)
RECLAIM_REASON = "orphaned: released by explore worker --reclaim"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
# We run Optuna's heartbeat ourselves around study.ask/tell (see _claim and _Heartbeat).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


# The claim lock ---------------------------------------------------------------------------------

class _PosixFileLock:
    """lockf on a side file: local file systems; released by the kernel if the holder dies."""

    def __init__(self, path: str):
        self.path, self.fd = path, None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


class _OpenLock:
    """O_EXCL lock file, as Optuna's journal uses: safe on NFS; a dead holder's lock is broken after 30 s."""

    def __init__(self, path: str):
        self.lock = JournalFileOpenLock(path)

    def __enter__(self):
        self.lock.acquire()

    def __exit__(self, *exc):
        self.lock.release()


class _PostgresLock:
    """A transaction-scoped advisory lock: released at commit, rollback or when the connection drops."""

    def __init__(self, engine, name: str):
        self.engine = engine
        self.key = int.from_bytes(hashlib.sha256(f"explore:{name}".encode()).digest()[:8], "big", signed=True)

    def __enter__(self):
        self.conn = self.engine.connect()
        try:
            self.conn.execute(sqlalchemy.text("select pg_advisory_xact_lock(:key)"), {"key": self.key})
        except BaseException:
            self.conn.close()
            raise

    def __exit__(self, *exc):
        self.conn.close()  # rolls back: the lock goes with the transaction


def claim_lock(study):
    backend = internals.rdb_backend(study)
    if backend is not None:
        engine = backend.engine
        if engine.dialect.name == "postgresql":
            return _PostgresLock(engine, study.study_name)
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            return _PosixFileLock(f"{engine.url.database}.claims")
    path = getattr(internals.storage(study), "explore_journal_path", None)  # set by studies.storage.open_storage
    if path:
        return _OpenLock(f"{path}.claims")
    return contextlib.nullcontext()


def heartbeat_of(study) -> int | None:
    return internals.heartbeat_interval(study)


class _Heartbeat:
    """Records the trial's heartbeat every interval in a thread (the first one is recorded at the claim)."""

    def __init__(self, study, trial_id: int):
        self.store, self.trial_id = internals.storage(study), trial_id
        self.interval = heartbeat_of(study)
        self.stop = threading.Event()
        self.thread = None

    def __enter__(self):
        if self.interval:
            self.thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{self.trial_id}")
            self.thread.start()

    def _beat(self):
        while not self.stop.wait(self.interval):
            try:
                self.store.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the grace period covers a few
                pass

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread:
            self.thread.join()


# The worker loop --------------------------------------------------------------------------------

def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claimed(trial) -> bool:
    return trial.state == TrialState.RUNNING and CLAIM_KEY in trial.system_attrs


@dataclass
class Outcome:
    status: str = "done"                           # done, held (journal: slots held by running trials), stopped
    held: list[int] = field(default_factory=list)  # numbers of the trials that held the last slots
    trained: int = 0                               # trials this worker completed


def requeue_interrupted_references(study) -> list[str]:
    """Queue again each reference point (a classic enqueued when the study was made) whose trial was
    interrupted (Ctrl-C), unless another trial of that classic is finished, queued or running; otherwise the
    finished study would lack it. Run by every worker as it starts, under the claim lock, so once per classic."""
    names = []
    with deferred_signals(), claim_lock(study):
        trials = study.get_trials(deepcopy=False)
        alive = {t.user_attrs.get(REFERENCE) for t in trials if t.state != TrialState.FAIL}
        for t in trials:
            name = t.user_attrs.get(REFERENCE)
            if (t.state == TrialState.FAIL and name and name not in alive and "fixed_params" in t.system_attrs
                    and t.user_attrs.get(FAIL_REASON) == INTERRUPTED):
                study.enqueue_trial(t.system_attrs["fixed_params"], user_attrs={REFERENCE: name})
                alive.add(name)
                names.append(name)
    return names


def work(study, objective: Callable, target: Callable[[], int], callbacks: Sequence[Callable] = (),
         catch: tuple = (), stop: Callable[[], bool] = lambda: False,
         on_wait: Callable[[list[int]], None] | None = None, promote: Callable | None = None) -> Outcome:
    """Claim, run and record trials until the study holds `target()` completed rung-0 trials and, given
    `promote` (study -> a new RUNNING promotion trial, or None; run under the lock), no promotion is due."""
    lock = claim_lock(study)
    beating = heartbeat_of(study)
    outcome = Outcome()
    while True:
        got = _claim(study, lock, target(), beating, promote)
        if not isinstance(got, optuna.Trial):
            raise_pending()  # a signal that came during the claim: nothing is held
        if isinstance(got, list):          # every remaining slot is held by a running trial
            if not beating:
                outcome.status, outcome.held = "held", got
                return outcome
            if on_wait:
                on_wait(got)
            time.sleep(min(5, beating))
            continue
        if got is None:
            return outcome
        frozen = _run_one(study, lock, got, objective, catch)
        if frozen is not None:
            outcome.trained += frozen.state == TrialState.COMPLETE
            for callback in callbacks:
                callback(study, frozen)
        if stop():
            outcome.status = "stopped"
            return outcome


def _claim(study, lock, target: int, beating, promote=None):
    """A new RUNNING trial claimed by this worker; None when the target is reached; else the held slots.

    A signal that comes meanwhile waits for _run_one, which releases the trial.
    """
    with deferred_signals(hold=True), lock:
        if beating:
            optuna.storages.fail_stale_trials(study)  # under the lock: the failure and its retry appear at once
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        counted = [t for t in trials if not rung_of(t)]  # promotions train counted genotypes again
        complete = sum(t.state == TrialState.COMPLETE for t in counted)
        held = [t.number for t in trials if claimed(t)]
        trial = promote(study) if promote else None  # a due promotion first, as ASHA does
        if trial is None:
            if complete >= target:
                return held if promote and held else None  # a running trial may yet make a promotion due
            if complete + sum(map(claimed, counted)) >= target:
                return held
            trial = study.ask()  # a waiting trial (a classic, a retry) first
        internals.storage(study).set_trial_system_attr(internals.trial_id(trial), CLAIM_KEY, worker_id())
        if beating:
            internals.storage(study).record_heartbeat(internals.trial_id(trial))
        return trial


def _run_one(study, lock, trial, objective, catch):
    values, state = None, TrialState.FAIL
    try:
        raise_pending()
        with _Heartbeat(study, internals.trial_id(trial)):
            values = objective(trial)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except catch:
        state = TrialState.FAIL
    except optuna.exceptions.UpdateFinishedTrialError:
        return None  # another worker failed it meanwhile (heartbeat overdue, --reclaim): it's theirs now
    except WorkerStopped:
        release(study, lock, trial, SIGTERM_REASON, retry=True)
        raise
    except KeyboardInterrupt:
        release(study, lock, trial, INTERRUPTED, retry=False)
        raise
    except BaseException:
        release(study, lock, trial, None, retry=False)
        raise
    with deferred_signals():
        return _tell(study, trial, values if state == TrialState.COMPLETE else None, state)


def _tell(study, trial, values, state):
    try:
        return study.tell(trial, values, state=state)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        # Another worker failed it meanwhile (no heartbeat for the grace period, or --reclaim):
        # the result is dropped, so nothing is counted twice.
        return None


def release(study, lock, trial, reason: str | None, retry: bool) -> None:
    """Mark a running trial FAIL (with its reason) and, if asked, enqueue its parameters once more."""
    with deferred_signals(), lock:
        store = internals.storage(study)
        try:
            if reason:
                store.set_trial_user_attr(internals.trial_id(trial), FAIL_REASON, reason)
            if _tell(study, trial, None, TrialState.FAIL) is None:
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        if retry:
            _retry(study, internals.trial_id(trial))


def reclaim(study) -> list[int]:
    """Fail every RUNNING trial of the study and enqueue each once more; for orphans only (no worker running)."""
    numbers = []
    with deferred_signals(), claim_lock(study):
        store = internals.storage(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                store.set_trial_user_attr(internals.trial_id(t), FAIL_REASON, RECLAIM_REASON)
                if not store.set_trial_state_values(internals.trial_id(t), TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            _retry(study, internals.trial_id(t))
            numbers.append(t.number)
    return numbers


RUN_ATTRS = (FAIL_REASON, "traceback", "wall_time", "history")  # of one run: not copied into its retry


def _retry(study, trial_id: int) -> None:
    """Enqueue a released trial's parameters once more, as Optuna does for a trial whose heartbeat stopped."""
    frozen = copy.deepcopy(internals.storage(study).get_trial(trial_id))
    frozen.user_attrs = {k: v for k, v in frozen.user_attrs.items() if k not in RUN_ATTRS}
    retry_callback()(study, frozen)


