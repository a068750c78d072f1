"""Several worker processes on one machine (`explore search --jobs N`, `explore worker --jobs N`), and
joining an existing study as a worker. Each process runs explorer.sweep.objective.run on the shared
study; the claim protocol (explorer.scaleout.claim) keeps the count of completed trials exact."""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys

import optuna
import torch
from optuna.trial import TrialState

from ..base.budget import format_flops
from ..base.errors import UserError
from ..scaleout.claim import claimed
from ..scaleout.signals import WorkerStopped, install_signal_handlers
from ..studies.progress import SearchProgress
from ..studies.record import TrialRecord, cost_at, counts
from ..studies.rungs import rung_of
from ..studies.storage import open_storage, redact
from ..studies.store import settings_of
from ..sweep import objective
from ..sweep.study import make_sampler
from ..trial import data as datasets
from ..trial.candidate import prepare
from ..trial.trainer import resolve_device, set_cpu_threads
from . import USER_ERRORS


def _die_with_parent() -> None:
    """SIGTERM when the parent dies (Linux), so an orphaned worker releases its trial."""
    parent = os.getppid()
    try:
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
        if resolve_device(device).type == "cpu":
            set_cpu_threads(workers=jobs)
        study, settings = join(study_name, url, heartbeat)
        objective.run(study, prepare(settings, device, data_dir))
    except WorkerStopped:
        code = 143
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - one line, like the CLI
        if not isinstance(e, USER_ERRORS):
            raise
        print(f"error: worker {os.getpid()}: {e}", file=sys.stderr, flush=True)
        code = 2
    sys.stdout.flush()
    os._exit(code)


def join(study_name: str, url: str, heartbeat=None, seeded: bool = False):
    """An existing study, opened for work (heartbeats on RDB storages), and its settings."""
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


def worker_device(device: str, worker: int, gpus: int) -> str:
    """The device worker `worker` of `--jobs N` trains on: an unindexed CUDA device (`cuda`, or `auto`
    on a CUDA machine) is spread round-robin over the `gpus` visible GPUs, since `cuda` alone means
    GPU 0 and N workers would share it; a named index or the CPU is kept as given."""
    if gpus < 1 or device not in ("cuda", "auto"):
        return device
    return f"cuda:{worker % gpus}"


def jobs_for(jobs: int, per_gpu: int | None, device: str) -> int:
    """The worker processes to start: `--jobs N`, or `--jobs-per-gpu K` times the GPUs `device` spreads
    over (every visible one for `cuda` or `auto`, one for `cuda:N`), so each GPU gets K (`worker_device`)."""
    if per_gpu is None:
        return jobs
    if jobs != 1:
        raise UserError(f"--jobs-per-gpu: give it or --jobs ({jobs}), not both")
    try:
        kind = resolve_device(device).type
    except ValueError as e:
        raise UserError(f"--device: {e}") from None
    if kind != "cuda":
        raise UserError("--jobs-per-gpu: counts workers per GPU, and this --device is the CPU; use --jobs there")
    return per_gpu * (1 if device.startswith("cuda:") else torch.cuda.device_count())


def run_pool(study_name: str, url: str, jobs: int, device: str, data_dir, heartbeat, settings, console) -> int:
    """N worker processes on this machine; the parent shows the live count from the storage.

    Returns the exit code: 0, 130 (Ctrl-C), 143 (SIGTERM) or 2 (a worker's error, printed by it).
    """
    datasets.ensure_available(settings.dataset, data_dir)  # download and check it once here, not in N workers
    mp = multiprocessing.get_context("spawn")
    gpus = torch.cuda.device_count() if resolve_device(device).type == "cuda" else 0
    procs = [mp.Process(target=_child, name=f"explore-worker-{i}", args=(
        study_name, url, worker_device(device, i, gpus), data_dir, heartbeat, jobs, os.getcwd())) for i in range(jobs)]
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
        with SearchProgress(settings.trials, len(_counted(trials)), 0, console,
                            settings.objective) as progress:
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


def _counted(trials) -> list:
    """The completed trials that count towards --trials (promotions train them again)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and not rung_of(t)]


def _show(progress, study, jobs: int) -> None:
    try:
        trials = study.get_trials(deepcopy=False)
        target = settings_of(study).trials
    except Exception:  # noqa: BLE001 - a busy database: show the next poll
        return
    complete = [t for t in _counted(trials) if cost_at(t, progress.objective) is not None]
    best = max(complete, key=lambda t: (t.values[0], -cost_at(t, progress.objective)), default=None)
    running = []
    for t in filter(claimed, trials):  # the running ones only: a poll a second over a large study
        record = TrialRecord.of(t)
        if record.flops is not None:
            epoch = f", epoch {max(t.intermediate_values)}" if t.intermediate_values else ""
            rung = f", rung {rung_of(t)}" if rung_of(t) else ""
            running.append(f"trial {t.number} ({record.family}{rung}, {format_flops(record.flops)} "
                           f"(multiply-adds){epoch})")
    current = f"{jobs} workers; training: " + "; ".join(running) if running else f"{jobs} workers"
    states = counts(trials)
    progress.sync(target, states.get("complete", 0), states.get("rejected", 0), states.get("fail", 0),
                  (best.values[0], cost_at(best, progress.objective), best.number) if best else None, current)
