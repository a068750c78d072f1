"""Many workers on one study: `explore search --jobs N`, `explore worker`, PostgreSQL, the journal file.

Every test checks the same invariants: the study ends with exactly its target of
completed trials, trial numbers are distinct, every completed trial is within
the budget. The PostgreSQL server comes from the `postgres` fixture
(tests/conftest.py): installed if missing, a throwaway cluster, stopped at the end.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import free_port

from explorer.commands.pool import worker_device
from explorer.scaleout.claim import CLAIM_KEY, RECLAIM_REASON, SIGTERM_REASON

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 300e6
COMPLETE, FAIL, RUNNING = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                           optuna.trial.TrialState.RUNNING)
# One thread per worker: several workers share the 2 cores of CI.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def quick(epochs: int = 1) -> list[str]:
    """Tiny MobileNet proxies on the embedded digits (as tests/test_search.py's QUICK)."""
    return ["--budget", "300MFLOPs", "--dataset", "digits", "--space", "mobilenet", "--epochs", str(epochs), "--proxy-resolution", "8",
            "--batch-size", "128", "--proxy-width", "0.05"]


def explore(*args, cwd, check=True):
    run = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True, env=ENV,
                         timeout=300)
    if check:
        assert run.returncode == 0, run.stderr + run.stdout
    return run


def start(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def trials_of(url: str, study: str):
    storage = url
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend
        storage = optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def assert_exact(trials, target: int):
    complete = [t for t in trials if t.state == COMPLETE]
    assert len(complete) == target, [(t.number, t.state.name) for t in trials]
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers) and sorted(numbers) == list(range(len(numbers)))
    for t in complete:
        assert t.values[1] <= BUDGET and t.user_attrs["flops"] <= BUDGET
        assert CLAIM_KEY in t.system_attrs
    return complete


# Epochs of the trials the tests kill or stop mid-way: 3 epochs of these tiny proxies last ~0.3 s, so a
# signal sent after the first epoch was seen could land once the trial had completed.
LONG = 30


def wait_for_training(url: str, study: str, *pids: int, timeout=180):
    """A trial one of the workers `pids` is training, once it has reported an epoch but not yet half of
    LONG (so it is mid-trial, with seconds to go)."""
    claims = tuple(f":{pid}" for pid in pids)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for t in trials_of(url, study):
            if (t.state == RUNNING and t.system_attrs.get(CLAIM_KEY, "").endswith(claims)
                    and 0 < len(t.intermediate_values) < LONG // 2):
                return t
        time.sleep(0.2)
    raise AssertionError(f"none of the workers {pids} trained a trial")


def claimant(trial, procs):
    """The process that claimed the trial."""
    return next(p for p in procs if trial.system_attrs[CLAIM_KEY].endswith(f":{p.pid}"))


def assert_retried(trials, original):
    """The failed trial's parameters were enqueued once and trained again: the same genotype."""
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == original.number]
    assert len(retries) == 1, [(t.number, t.state.name, t.system_attrs.get("failed_trial")) for t in trials]
    retry = retries[0]
    assert retry.state == COMPLETE and retry.params == original.params
    assert retry.user_attrs["digest"] == original.user_attrs["digest"]
    assert "fail_reason" not in retry.user_attrs


CONTENDER = """
import os, pathlib, random, sys, time
import optuna
from explorer.scaleout import claim
from explorer.studies.storage import open_storage
url, name, target, n_workers = sys.argv[1:]
study = optuna.load_study(study_name=name, storage=open_storage(url, (1, 5)), sampler=optuna.samplers.RandomSampler())
pathlib.Path(f"ready-{os.getpid()}").touch()  # start together, so that all of them contend
while len(list(pathlib.Path().glob("ready-*"))) < int(n_workers):
    time.sleep(0.01)

def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    time.sleep(random.random() / 50)
    if x < 0.2:
        raise optuna.TrialPruned()  # like a rejected draw: it frees its slot
    return x, 1.0

claim.work(study, objective, lambda: int(target))
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_claims_are_exact_under_contention(kind, tmp_path, request):
    """Four workers with instant trials all finish at once, again and again: never one trial too many."""
    url = {"sqlite": lambda: f"sqlite:///{tmp_path}/s.db", "journal": lambda: f"journal:{tmp_path}/s.log",
           "postgres": lambda: request.getfixturevalue("postgres").create_database("contention")}[kind]()
    from explorer.studies.storage import open_storage
    optuna.create_study(study_name="c", storage=open_storage(url), directions=["maximize", "minimize"])
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, url, "c", "30", "4"], env=ENV, cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    trials = trials_of(url, "c")
    assert sum(t.state == COMPLETE for t in trials) == 30
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(numbers)))
    assert not [t for t in trials if t.state == RUNNING]
    assert len({t.system_attrs[CLAIM_KEY] for t in trials}) >= 3


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_the_claim_lock_excludes_other_workers(kind, tmp_path, request):
    """While this process holds the study's claim lock, a worker can't claim a trial; once freed, it does.

    The contention test above only catches a missing lock by luck (the journal ran without one for months).
    """
    url = {"sqlite": lambda: f"sqlite:///{tmp_path}/s.db", "journal": lambda: f"journal:{tmp_path}/s.log",
           "postgres": lambda: request.getfixturevalue("postgres").create_database("excludes")}[kind]()
    from explorer.scaleout.claim import claim_lock
    from explorer.studies.storage import open_storage
    study = optuna.create_study(study_name="c", storage=open_storage(url), directions=["maximize", "minimize"])
    with claim_lock(study):
        worker = subprocess.Popen([sys.executable, "-c", CONTENDER, url, "c", "1", "1"], env=ENV, cwd=tmp_path,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not (tmp_path / f"ready-{worker.pid}").exists() and worker.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # ample time to claim, were the lock not held
        assert worker.poll() is None and trials_of(url, "c") == [], worker.stderr.read() if worker.poll() else ""
    assert worker.wait(timeout=60) == 0, worker.stderr.read()
    assert sum(t.state == COMPLETE for t in trials_of(url, "c")) == 1


def test_postgres_three_workers_exact_count(postgres, tmp_path):
    url = postgres.create_database("three")
    made = explore("search", "--study", "big", "--storage", url, "--trials", "6", "--no-run", *quick(epochs=3),
                   cwd=tmp_path)
    assert "explore worker --study big" in made.stdout
    assert trials_of(url, "big") == []
    # three workers: one process with two (--jobs 2), then one with one (it starts faster)
    procs = [start("worker", "--study", "big", "--storage", url, "--jobs", "2", cwd=tmp_path)]
    deadline = time.time() + 120
    while not trials_of(url, "big") and time.time() < deadline:
        time.sleep(0.2)
    procs.append(start("worker", "--study", "big", "--storage", url, cwd=tmp_path))
    for proc in procs:
        code, out, err = finish(proc)
        assert code == 0 and "6/6 trials done" in out, err + out
        assert "Traceback" not in err
    complete = assert_exact(trials_of(url, "big"), 6)
    assert len({t.system_attrs[CLAIM_KEY] for t in complete}) >= 2  # they really shared the work
    assert not (tmp_path / "studies").exists() or not list((tmp_path / "studies").glob("*/study.db"))


def test_postgres_killed_worker_is_retried_and_sigterm_releases(postgres, tmp_path):
    url = postgres.create_database("crash")
    explore("search", "--study", "crash", "--storage", url, "--trials", "6", "--no-run", *quick(epochs=LONG),
            cwd=tmp_path)
    beat = ["--heartbeat", "1", "--grace", "4"]
    workers = [start("worker", "--study", "crash", "--storage", url, *beat, cwd=tmp_path) for _ in range(3)]
    # Kill whichever worker is mid-trial first; then SIGTERM whichever live one trains next (the other
    # may already have trained everything else and picked up the killed trial's retry); the last one
    # finishes the study.
    killed = wait_for_training(url, "crash", *(w.pid for w in workers))
    dead = claimant(killed, workers)
    dead.send_signal(signal.SIGKILL)
    assert finish(dead)[0] == -signal.SIGKILL
    alive = [w for w in workers if w is not dead]
    stopped = wait_for_training(url, "crash", *(w.pid for w in alive))
    victim = claimant(stopped, alive)
    victim.send_signal(signal.SIGTERM)
    code, out, err = finish(victim)
    assert code == 143 and "released" in out and "Traceback" not in err, err + out
    code, out, err = finish(next(w for w in alive if w is not victim))
    assert code == 0 and "6/6 trials done" in out, err + out
    trials = trials_of(url, "crash")
    assert_exact(trials, 6)
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == FAIL  # failed by a live worker after the grace period
    assert by_number[stopped.number].state == FAIL
    assert by_number[stopped.number].user_attrs["fail_reason"] == SIGTERM_REASON
    assert_retried(trials, by_number[killed.number])
    assert_retried(trials, by_number[stopped.number])
    assert not [t for t in trials if t.state == RUNNING]


def test_journal_workers_exact_count_and_reclaim(tmp_path):
    url = f"journal:{tmp_path / 'shared' / 'big.log'}"
    (tmp_path / "shared").mkdir()
    explore("search", "--study", "big", "--storage", url, "--trials", "5", "--no-run", *quick(epochs=LONG),
            cwd=tmp_path)
    workers = [start("worker", "--study", "big", "--storage", url, cwd=tmp_path) for _ in range(3)]
    killed = wait_for_training(url, "big", *(w.pid for w in workers))
    dead = claimant(killed, workers)
    dead.send_signal(signal.SIGKILL)
    finish(dead)
    for proc in (w for w in workers if w is not dead):
        code, out, err = finish(proc)
        assert code == 0 and "Traceback" not in err, err + out
        assert "--reclaim" in out  # each says why it stopped short, and what to do
    # No heartbeat: the killed worker's trial stays RUNNING and holds its slot, so the others stop one short.
    trials = trials_of(url, "big")
    assert_exact(trials, 4)
    assert [t.number for t in trials if t.state == RUNNING] == [killed.number]
    # Once no worker runs, --reclaim fails the orphan, retries its genotype once, and trains the rest.
    code, out, err = finish(start("worker", "--study", "big", "--storage", url, "--reclaim", cwd=tmp_path))
    assert code == 0 and f"1 running trial failed and enqueued again ({killed.number})" in out, err + out
    trials = trials_of(url, "big")
    assert_exact(trials, 5)
    orphan = {t.number: t for t in trials}[killed.number]
    assert orphan.state == FAIL and orphan.user_attrs["fail_reason"] == RECLAIM_REASON
    assert_retried(trials, orphan)


def test_search_jobs_4_over_sqlite(tmp_path):
    run = explore("search", "--study", "local", "--trials", "8", "--jobs", "4", *quick(), cwd=tmp_path)
    assert "locked" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert "8 completed" in run.stdout
    complete = assert_exact(trials_of(f"sqlite:///{tmp_path}/studies/local/study.db", "local"), 8)
    assert len({t.system_attrs[CLAIM_KEY] for t in complete}) >= 2


def test_worker_errors_are_one_line_and_touch_nothing(postgres, tmp_path):
    url = postgres.create_database("errors")
    explore("search", "--study", "keep", "--storage", url, "--trials", "3", "--no-run", *quick(), cwd=tmp_path)
    study = optuna.load_study(study_name="keep", storage=url)
    study.add_trial(optuna.create_trial(values=[0.5, 1e8], params={}, distributions={},
                                        user_attrs={"flops": 100_000_000}))
    before = [(t.number, t.state, t.values, t.user_attrs, t.datetime_complete) for t in trials_of(url, "keep")]
    cases = {
        "unreachable": (["--storage", url.replace(f":{postgres.port}/", f":{free_port()}/"), "--study", "keep"],
                        "can't open"),
        "wrong credentials": (["--storage", postgres.url("errors", password="wrong"), "--study", "keep"],
                              "password authentication failed"),
        "missing study": (["--storage", url, "--study", "nope"], "no study named 'nope' in postgresql+psycopg://explore:***@"
                                                                  f"127.0.0.1:{postgres.port}/errors; studies there: keep"),
        "missing default study": (["--study", "nope"], "no study named 'nope'"),
    }
    for case, (flags, phrase) in cases.items():
        run = explore("worker", *flags, cwd=tmp_path, check=False)
        assert run.returncode == 2, (case, run.stderr, run.stdout)
        assert phrase in run.stderr and "Traceback" not in run.stderr, (case, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, (case, run.stderr)
        assert "wrong" not in run.stderr and postgres.password not in run.stderr  # passwords are never printed
    after = [(t.number, t.state, t.values, t.user_attrs, t.datetime_complete) for t in trials_of(url, "keep")]
    assert after == before


@pytest.mark.parametrize("device, gpus, expected", [
    ("cuda", 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]),  # round-robin, not all on GPU 0
    ("auto", 2, ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0", "cuda:1"]),
    ("cuda:3", 4, ["cuda:3"] * 6),  # a named GPU is kept
    ("cpu", 0, ["cpu"] * 6),
    ("auto", 0, ["auto"] * 6),      # no GPU: auto stays the CPU
])
def test_jobs_spread_workers_over_the_visible_gpus(device, gpus, expected):
    assert [worker_device(device, i, gpus) for i in range(6)] == expected
