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
its slot. When every remaining slot is held by running trials, a worker on a
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
import fcntl
import hashlib
import os
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import optuna
from optuna.trial import TrialState

from .errors import UserError

CLAIM_KEY = "explore:worker"
DEFAULT_HEARTBEAT = (60, 120)   # seconds: interval, grace period
MAX_RETRY = 1
SIGTERM_REASON = "worker stopped (SIGTERM)"
INTERRUPTED = "interrupted"  # Ctrl-C: the trial is failed, not retried (but see requeue_interrupted_references)
RECLAIM_REASON = "orphaned: released by explore worker --reclaim"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
# We run Optuna's heartbeat ourselves around study.ask/tell (see _claim and _Heartbeat).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def retry_callback():
    """Optuna's retry-once callback under its current name (RetryFailedTrialCallback before 4.9)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=MAX_RETRY)


# Signals ---------------------------------------------------------------------------------------

class WorkerStopped(BaseException):
    """SIGTERM: release the running trial and exit 143 (a BaseException, like KeyboardInterrupt)."""


_critical = 0
_pending: list[int] = []


def _on_signal(signum, frame):
    if _critical:
        _pending.append(signum)  # raised when the claim or the result is stored
        return
    _raise_for(signum)


def _raise_for(signum):
    if signum == signal.SIGTERM:
        raise WorkerStopped()
    raise KeyboardInterrupt()


def install_signal_handlers() -> dict:
    """SIGTERM raises WorkerStopped, SIGINT KeyboardInterrupt; both wait while a claim or result is stored.

    Returns the handlers they replace, for restore_signal_handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}


def restore_signal_handlers(old: dict) -> None:
    for s, handler in old.items():
        signal.signal(s, handler)


@contextlib.contextmanager
def deferred_signals(hold: bool = False):
    """Signals wait until the block is done; then they are raised, or with `hold` kept for raise_pending."""
    global _critical
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if not hold:
            raise_pending()


def raise_pending() -> None:
    if not _critical and _pending:
        signum = _pending[0]
        _pending.clear()
        _raise_for(signum)


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
        from optuna.storages.journal import JournalFileOpenLock
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
        import sqlalchemy
        self.conn = self.engine.connect()
        try:
            self.conn.execute(sqlalchemy.text("select pg_advisory_xact_lock(:key)"), {"key": self.key})
        except BaseException:
            self.conn.close()
            raise

    def __exit__(self, *exc):
        self.conn.close()  # rolls back: the lock goes with the transaction


def backend_of(study):
    store = study._storage
    return getattr(store, "_backend", store)  # RDB storages come wrapped in Optuna's cache


def claim_lock(study):
    backend = backend_of(study)
    if isinstance(backend, optuna.storages.RDBStorage):
        engine = backend.engine
        if engine.dialect.name == "postgresql":
            return _PostgresLock(engine, study.study_name)
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            return _PosixFileLock(f"{engine.url.database}.claims")
    path = getattr(backend, "explore_journal_path", None)  # set by study.open_storage
    if path:
        return _OpenLock(f"{path}.claims")
    return contextlib.nullcontext()


def heartbeat_of(study) -> int | None:
    from optuna.storages._heartbeat import BaseHeartbeat
    store = study._storage
    return store.get_heartbeat_interval() if isinstance(store, BaseHeartbeat) else None


class _Heartbeat:
    """Records the trial's heartbeat every interval in a thread (the first one is recorded at the claim)."""

    def __init__(self, study, trial_id: int):
        self.store, self.trial_id = study._storage, trial_id
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
        alive = {t.user_attrs.get("reference") for t in trials if t.state != TrialState.FAIL}
        for t in trials:
            name = t.user_attrs.get("reference")
            if (t.state == TrialState.FAIL and name and name not in alive and "fixed_params" in t.system_attrs
                    and t.user_attrs.get("fail_reason") == INTERRUPTED):
                study.enqueue_trial(t.system_attrs["fixed_params"], user_attrs={"reference": name})
                alive.add(name)
                names.append(name)
    return names


def work(study, objective: Callable, target: Callable[[], int], callbacks: Sequence[Callable] = (),
         catch: tuple = (), stop: Callable[[], bool] = lambda: False,
         on_wait: Callable[[list[int]], None] | None = None) -> Outcome:
    """Claim, run and record trials until the study holds `target()` completed trials."""
    lock = claim_lock(study)
    beating = heartbeat_of(study)
    outcome = Outcome()
    while True:
        got = _claim(study, lock, target(), beating)
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


def _claim(study, lock, target: int, beating):
    """A new RUNNING trial claimed by this worker; None when the target is reached; else the held slots.

    A signal that comes meanwhile waits for _run_one, which releases the trial.
    """
    with deferred_signals(hold=True), lock:
        if beating:
            optuna.storages.fail_stale_trials(study)  # under the lock: the failure and its retry appear at once
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        held = [t.number for t in trials if claimed(t)]
        if complete >= target:
            return None
        if complete + len(held) >= target:
            return held
        trial = study.ask()  # a waiting trial (a classic, a retry) first
        study._storage.set_trial_system_attr(trial._trial_id, CLAIM_KEY, worker_id())
        if beating:
            study._storage.record_heartbeat(trial._trial_id)
        return trial


def _run_one(study, lock, trial, objective, catch):
    values, state = None, TrialState.FAIL
    try:
        raise_pending()
        with _Heartbeat(study, trial._trial_id):
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
        store = study._storage
        try:
            if reason:
                store.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if _tell(study, trial, None, TrialState.FAIL) is None:
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        if retry:
            _retry(study, trial._trial_id)


def reclaim(study) -> list[int]:
    """Fail every RUNNING trial of the study and enqueue each once more; for orphans only (no worker running)."""
    numbers = []
    with deferred_signals(), claim_lock(study):
        store = study._storage
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                store.set_trial_user_attr(t._trial_id, "fail_reason", RECLAIM_REASON)
                if not store.set_trial_state_values(t._trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            _retry(study, t._trial_id)
            numbers.append(t.number)
    return numbers


RUN_ATTRS = ("fail_reason", "traceback", "wall_time", "history")  # of one run: not copied into its retry


def _retry(study, trial_id: int) -> None:
    """Enqueue a released trial's parameters once more, as Optuna does for a trial whose heartbeat stopped."""
    import copy
    frozen = copy.deepcopy(study._storage.get_trial(trial_id))
    frozen.user_attrs = {k: v for k, v in frozen.user_attrs.items() if k not in RUN_ATTRS}
    retry_callback()(study, frozen)


# Several worker processes on one machine --------------------------------------------------------

def _die_with_parent() -> None:
    """SIGTERM when the parent dies (Linux), so an orphaned worker releases its trial."""
    parent = os.getppid()
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        raise WorkerStopped()


def _child(study_name: str, url: str, device: str, data_dir, heartbeat, jobs: int, cwd: str) -> None:
    """One worker process of `--jobs N`: quiet, its own process group, errors as one line."""
    os.setpgrp()  # the terminal's Ctrl-C goes to the parent, which forwards it once
    os.chdir(cwd)
    install_signal_handlers()  # for the rest of this process's life
    code = 0
    try:
        _die_with_parent()
        from .trainer import resolve_device, set_cpu_threads
        if resolve_device(device).type == "cpu":
            set_cpu_threads(workers=jobs)
        study, settings = join(study_name, url, heartbeat)
        from . import search
        search.run(study, search.prepare(settings, device, data_dir))
    except WorkerStopped:
        code = 143
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - one line, like the CLI
        from .errors import USER_ERRORS
        if not isinstance(e, USER_ERRORS):
            raise
        print(f"error: worker {os.getpid()}: {e}", file=sys.stderr, flush=True)
        code = 2
    sys.stdout.flush()
    os._exit(code)


def join(study_name: str, url: str, heartbeat=None, seeded: bool = False):
    """An existing study, opened for work (heartbeats on RDB storages), and its settings."""
    from .search import make_sampler
    from .study import open_storage, redact, settings_of
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store = open_storage(url, heartbeat)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        try:
            names = optuna.get_all_study_names(store)
        except Exception:  # noqa: BLE001
            names = []
        hint = f"; studies there: {', '.join(names)}" if names else ""
        raise UserError(f"no study named '{study_name}' in {redact(url)}{hint}") from None
    settings = settings_of(study)
    # Several workers: unseeded samplers, or every worker would draw the same genotypes.
    sampler = make_sampler(settings.sampler, settings.seed if seeded else None)
    return optuna.load_study(study_name=study_name, storage=store, sampler=sampler), settings


def run_pool(study_name: str, url: str, jobs: int, device: str, data_dir, heartbeat, settings, console) -> int:
    """N worker processes on this machine; the parent shows the live count from the storage.

    Returns the exit code: 0, 130 (Ctrl-C), 143 (SIGTERM) or 2 (a worker's error, printed by it).
    """
    import multiprocessing

    from . import data as datasets
    from .progress import SearchProgress
    from .study import open_storage
    datasets.ensure_available(settings.dataset, data_dir)  # download and check it once here, not in N workers
    mp = multiprocessing.get_context("spawn")
    procs = [mp.Process(target=_child, args=(study_name, url, device, data_dir, heartbeat, jobs, os.getcwd()),
                        name=f"explore-worker-{i}") for i in range(jobs)]
    watcher = optuna.load_study(study_name=study_name, storage=open_storage(url))
    forwarded: list[int] = []

    def forward(signum, frame):
        forwarded.append(signum)
        for p in procs:
            if p.pid and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        trials = watcher.get_trials(deepcopy=False)
        with SearchProgress(settings.trials, _count(trials, TrialState.COMPLETE), 0, console) as progress:
            while any(p.is_alive() for p in procs):
                for p in procs:
                    p.join(timeout=1.0 / jobs)
                _show(progress, watcher, jobs)
            _show(progress, watcher, jobs)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if forwarded:
        return 143 if signal.SIGTERM in forwarded else 130
    for p in procs:
        if p.exitcode and p.exitcode < 0:
            console.print(f"[yellow]worker {p.pid} was killed by {signal.Signals(-p.exitcode).name}[/]: the others "
                          "carried on; its trial is failed and retried once its heartbeat is overdue", highlight=False)
    codes = [p.exitcode for p in procs if p.exitcode and p.exitcode > 0]
    return (2 if 2 in codes else codes[0]) if codes else 0


def _count(trials, state) -> int:
    return sum(t.state == state for t in trials)


def _show(progress, study, jobs: int) -> None:
    from .budget import format_flops
    from .study import settings_of
    try:
        trials = study.get_trials(deepcopy=False)
        target = settings_of(study).trials
    except Exception:  # noqa: BLE001 - a busy database: show the next poll
        return
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.values[0], -t.values[1]), default=None)
    running = []
    for t in trials:
        if claimed(t) and "flops" in t.user_attrs:
            epoch = f", epoch {max(t.intermediate_values)}" if t.intermediate_values else ""
            running.append(f"trial {t.number} ({t.user_attrs.get('family')}, "
                           f"{format_flops(t.user_attrs['flops'])}{epoch})")
    current = f"{jobs} workers; training: " + "; ".join(running) if running else f"{jobs} workers"
    progress.sync(target, len(complete), sum("rejected" in t.user_attrs for t in trials),
                  _count(trials, TrialState.FAIL),
                  (best.values[0], int(best.values[1]), best.number) if best else None, current)
