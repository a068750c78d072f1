"""Multi-fidelity promotion (`explore search --rungs`): the rule on constructed rungs and studies, the claim
protocol with promotions (one process, PostgreSQL workers), resume mid-rung, the ladder setting, and the
± / tied display of the front. Accuracy figures belong in benchmarks/, not here."""
import signal
import statistics
import subprocess
import sys
import time

import optuna
import pytest
from test_scale_out import ENV, explore, quick
from typer.testing import CliRunner

import space
from cli import app
from explorer.analysis import pareto, report, summary
from explorer.base.dominance import accuracy_noise, near_front
from explorer.base.errors import UserError
from explorer.base.ladder import IMAGE_CAP, TOP_SEEDS, Rung, default_ladder, parse_rungs
from explorer.base.settings import Settings
from explorer.scaleout import claim
from explorer.scaleout.claim import CLAIM_KEY, INTERRUPTED
from explorer.studies.rungs import ACCURACY_STD, ROOT, RUNG, SEED_ACCURACIES, highest_rungs, root_of, rung_of
from explorer.studies.storage import open_storage
from explorer.sweep import promotion
from explorer.sweep.promotion import Entry, to_promote
from space.named import named

COMPLETE, FAIL, RUNNING, WAITING = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                                    optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
QUICK = quick(epochs=1)


# The rule on one rung ------------------------------------------------------------------------------

def test_the_top_third_by_non_dominated_sorting_is_promoted_best_first():
    # 9 genotypes: the front is a (0.90, 100), b (0.80, 50), c (0.60, 10); the rest are dominated
    entries = [Entry(n, acc, cost, 0.005) for n, (acc, cost) in enumerate(
        [(0.90, 100), (0.80, 50), (0.60, 10), (0.70, 60), (0.50, 70), (0.55, 80), (0.40, 90), (0.30, 95),
         (0.20, 99)])]
    assert to_promote(entries, set()) == [0, 1, 2]  # floor(9 / 3) = 3: the front, most accurate first
    assert to_promote(entries, {0}) == [1, 2]         # a genotype is promoted once
    assert to_promote(entries[:2], set()) == []       # fewer than eta at the rung: nobody yet


def test_a_dominated_trial_is_promoted_only_within_the_noise_of_the_front():
    # quota 2 of 6: a is the front; d is a hair below it and a little dearer; e is far below
    near = [Entry(0, 0.900, 100, 0.01), Entry(1, 0.895, 110, 0.01), *[Entry(n, 0.5 - n / 100, 200 + n, 0.01)
                                                                       for n in range(2, 6)]]
    assert to_promote(near, set()) == [0, 1]
    far = [Entry(0, 0.900, 100, 0.01), Entry(1, 0.80, 110, 0.01), *near[2:]]
    assert to_promote(far, set()) == [0]  # second by the ranking, but told apart from a: not worth retraining
    assert near_front([(0.9, 100), (0.8, 110)], [0.06, 0.05]) == [True, True]  # a wide noise ties them


# The rule on a constructed study -------------------------------------------------------------------

def add(study, number_x: float, acc: float, cost: float, rung: int = 0, root: int | None = None,
        state=COMPLETE, **attrs):
    user = {"val_images": 2000, **attrs, **({RUNG: rung, ROOT: root} if rung else {})}
    study.add_trial(optuna.create_trial(
        state=state, values=[acc, cost] if state == COMPLETE else None, params={"x": number_x},
        distributions={"x": optuna.distributions.FloatDistribution(0, 100)}, user_attrs=user))


def constructed(rung0: list[tuple[float, float]]):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for n, (acc, cost) in enumerate(rung0):
        add(study, n, acc, cost)
    return study


SIX = [(0.90, 100), (0.85, 40), (0.50, 90), (0.40, 95), (0.30, 97), (0.20, 99)]  # front: 0 and 1


def test_who_is_promoted_at_which_rung_in_a_study():
    study = constructed(SIX)
    source, rung = promotion.due(study.get_trials(), 2)
    assert (source.number, rung) == (0, 1)
    add(study, 0, 0.92, 100, rung=1, root=0)        # trial 6: genotype 0 at rung 1
    source, rung = promotion.due(study.get_trials(), 2)
    assert (source.number, rung) == (1, 1)          # next best at rung 0; rung 1 holds 1 < eta
    add(study, 1, 0.88, 40, rung=1, root=1)         # trial 7
    assert promotion.due(study.get_trials(), 2) is None  # rung 0's quota of 2 is spent; rung 1 holds 2
    add(study, 6, 0.95, 30)                          # trial 8: a new rung-0 front point
    for n, (acc, cost) in enumerate([(0.1, 200), (0.1, 201)], start=9):
        add(study, n, acc, cost)                     # rung 0 holds 9: quota 3
    source, rung = promotion.due(study.get_trials(), 2)
    assert (source.number, rung) == (8, 1)
    add(study, 6, 0.96, 30, rung=1, root=8)          # rung 1 now holds 3: its best goes to rung 2 first
    source, rung = promotion.due(study.get_trials(), 2)
    assert (root_of(source), rung_of(source), rung) == (8, 1, 2)
    best = {root_of(t): rung_of(t) for t in highest_rungs(study.get_trials())}
    assert best[0] == 1 and best[8] == 1 and best[2] == 0


def test_an_interrupted_promotion_is_redone_and_a_failed_one_is_not():
    study = constructed(SIX)
    add(study, 0, 0.0, 0, rung=1, root=0, state=FAIL, fail_reason=INTERRUPTED)
    assert promotion.due(study.get_trials(), 1)[0].number == 0   # Ctrl-C: resuming trains it again
    add(study, 0, 0.0, 0, rung=1, root=0, state=FAIL, fail_reason="diverged: loss is nan")
    assert promotion.due(study.get_trials(), 1)[0].number == 1   # a real failure holds its rung


def test_promote_creates_a_linked_running_trial_and_claims_a_queued_retry_first():
    study = constructed(SIX)
    trial = promotion.promote(study, 2)
    frozen = study.get_trials()[trial.number]
    assert frozen.state == RUNNING and frozen.params == study.get_trials()[0].params
    assert (frozen.user_attrs[RUNG], frozen.user_attrs[ROOT]) == (1, 0)
    study.tell(trial, state=FAIL)
    add(study, 0, 0.0, 0, rung=1, root=0, state=WAITING)  # as a heartbeat retry is queued
    retry = promotion.promote(study, 2)
    assert retry.number == len(study.get_trials()) - 1 and study.get_trials()[retry.number].state == RUNNING


# The claim protocol with promotions ----------------------------------------------------------------

def fake(trial):
    """Every genotype on the front (accuracy rises with cost), each worse than those drawn before it: the
    top third of a rung is then always its earliest, and each rung holds exactly a third of the one below."""
    trial.suggest_float("x", 0, 1)
    worse = trial.user_attrs.get(ROOT, trial.number) / 1000
    return 1 - worse + rung_of(trial) / 10, 1 - worse


def check_rungs(trials, target: int, rungs: int, exact: bool = True):
    """Exactly `target` rung-0 trials, a third of the rung below at each rung above (at least, where
    workers finish out of order: ASHA may promote one that a late finisher then outranks), one trial per
    genotype and rung, each promoted from the rung below."""
    done = [t for t in trials if t.state == COMPLETE]
    counts = [sum(rung_of(t) == r for t in done) for r in range(rungs + 1)]
    assert counts[0] == target and all(counts[r] >= counts[r - 1] // 3 for r in range(1, rungs + 1)), counts
    assert not exact or all(counts[r] == counts[r - 1] // 3 for r in range(1, rungs + 1)), counts
    pairs = {(root_of(t), rung_of(t)) for t in done}
    assert len(pairs) == len(done) and all((root, rung - 1) in pairs for root, rung in pairs if rung)
    for t in done:
        if rung_of(t):
            assert t.params == trials[root_of(t)].params and CLAIM_KEY in t.system_attrs
    assert not [t for t in trials if t.state == RUNNING]


def test_work_promotes_before_drawing_and_keeps_the_count_exact(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db"), study_name="p",
                                directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    outcome = claim.work(study, fake, lambda: 9, promote=lambda s: promotion.promote(s, 2))
    trials = study.get_trials()
    check_rungs(trials, 9, 2)
    assert outcome.trained == 9 + 3 + 1
    first = next(t for t in trials if rung_of(t))
    assert first.number == 3  # promoted as soon as rung 0 held 3 trials, before a fourth draw


CONTENDER = """
import sys
import optuna
from explorer.scaleout import claim
from explorer.sweep import promotion
from explorer.studies.rungs import rung_of
from explorer.studies.storage import open_storage
from space.named import named
url, worker = sys.argv[1:]
study = optuna.load_study(study_name="p", storage=open_storage(url, (1, 5)), sampler=optuna.samplers.RandomSampler())

def objective(trial):
    trial.suggest_float("x", 0, 1)
    with open(f"log-{worker}", "a") as log:
        log.write(f"{rung_of(trial)}\\n")
    worse = trial.user_attrs.get("promoted_from", trial.number) / 1000
    return 1 - worse + rung_of(trial) / 10, 1 - worse

claim.work(study, objective, lambda: 18, promote=lambda s: promotion.promote(s, 2))
"""


def test_postgres_workers_at_different_rungs_keep_every_count_exact(postgres, tmp_path):
    url = postgres.create_database("rungs")
    optuna.create_study(study_name="p", storage=open_storage(url), directions=["maximize", "minimize"])
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, url, str(w)], env=ENV, cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True) for w in range(3)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    trials = optuna.load_study(study_name="p", storage=url).get_trials()
    check_rungs(trials, 18, 2, exact=False)  # 18 at rung 0, about 6 at rung 1, 2 at rung 2
    rungs_per_worker = [set((tmp_path / f"log-{w}").read_text().split()) for w in range(3)
                        if (tmp_path / f"log-{w}").exists()]
    assert len(set().union(*rungs_per_worker)) == 3 and len(rungs_per_worker) >= 2


def test_explore_workers_on_postgres_promote_and_finish(postgres, tmp_path):
    url = postgres.create_database("rungworkers")
    explore("search", "--study", "r", "--storage", url, "--trials", "3", "--rungs", "epochs=2",
            "--no-run", *QUICK, cwd=tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "cli", "worker", "--study", "r", "--storage", url], cwd=tmp_path,
                              env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0 and "3/3 trials done" in out, err + out
    trials = optuna.load_study(study_name="r", storage=url).get_trials()
    done = [t for t in trials if t.state == COMPLETE]
    assert sum(not rung_of(t) for t in done) == 3
    promoted = [t for t in done if rung_of(t)]
    assert len(promoted) == 1 and all(t.user_attrs["digest"] == trials[root_of(t)].user_attrs["digest"] for t in promoted)
    assert all(len(t.intermediate_values) == 1 + rung_of(t) for t in done)  # each rung's epochs: 1, 2
    seeds = promoted[0].user_attrs[SEED_ACCURACIES]  # the top rung trains TOP_SEEDS seeds; its value is their mean
    assert len(seeds) == TOP_SEEDS and promoted[0].values[0] == pytest.approx(sum(seeds) / len(seeds))
    assert promoted[0].user_attrs[ACCURACY_STD] == pytest.approx(statistics.stdev(seeds))


# Resume mid-rung -------------------------------------------------------------------------------------

def test_a_promotion_interrupted_mid_rung_is_trained_again_on_resume(tmp_path):
    args = ["search", "--study", "m", "--trials", "3", "--rungs", "epochs=20/seeds=1", *QUICK]
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=tmp_path, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"sqlite:///{tmp_path}/studies/m/study.db"
    deadline, running = time.time() + 180, None
    while running is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:  # the search creates the database meanwhile
            trials = optuna.load_study(study_name="m", storage=url).get_trials()
        except Exception:  # noqa: BLE001 - not there yet, or its schema half made
            continue
        running = next((t for t in trials if t.state == RUNNING and rung_of(t) and 0 < len(t.intermediate_values) < 10),
                       None)
    assert running is not None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    interrupted = optuna.load_study(study_name="m", storage=url).get_trials()[running.number]
    assert interrupted.state == FAIL and interrupted.user_attrs["fail_reason"] == INTERRUPTED
    resumed = explore(*args, cwd=tmp_path)
    assert "3/3 trials done" in resumed.stdout and "rung" in resumed.stdout
    trials = optuna.load_study(study_name="m", storage=url).get_trials()
    again = [t for t in trials if t.state == COMPLETE and rung_of(t)]
    assert [root_of(t) for t in again] == [root_of(interrupted)] and len(again[0].intermediate_values) == 20
    assert sum(t.state == COMPLETE and not rung_of(t) for t in trials) == 3


# The setting -----------------------------------------------------------------------------------------

BASE = Rung(epochs=2, train_images=3000, resolution=12, width=0.5)


def test_the_default_ladder_grows_images_to_the_cap_then_epochs_and_seeds_the_top():
    ladder = default_ladder(BASE, 4)
    assert [(r.epochs, r.train_images) for r in ladder] == [(2, 3000), (2, 9000), (6, 9000), (18, 9000)]
    assert 9000 * 3 > IMAGE_CAP and [r.seeds for r in ladder] == [1, 1, 1, TOP_SEEDS]
    assert parse_rungs("3", BASE) == [r.to_dict() for r in default_ladder(BASE, 3)[1:]]
    assert parse_rungs("off", BASE) == parse_rungs("1", BASE) == []
    spelled = parse_rungs("images=9000, epochs=6/resolution=28/width=1/seeds=3", BASE)
    assert spelled == [dict(epochs=2, train_images=9000, resolution=12, width=0.5, seeds=1),
                       dict(epochs=6, train_images=9000, resolution=28, width=1.0, seeds=3)]


@pytest.mark.parametrize("text,says", [("7", "out of range"), ("epochs=0", "epochs 0 is out of range"),
                                       ("image=9000", "unknown key 'image'"), ("epochs=two", "isn't a whole number"),
                                       ("width=x", "isn't a number"), ("epochs=2, seeds=99", "rung 2's seeds")])
def test_bad_rungs_are_one_line_naming_the_flag(text, says):
    with pytest.raises(UserError, match="--rungs") as error:
        parse_rungs(text, BASE)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_rungs_are_stored_with_the_study_and_compared_on_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # in-process: no start-up of torch per command

    def search(*args):
        return CliRunner().invoke(app, ["search", *args, "--no-run"])
    assert search("--study", "c", "--rungs", "2", *QUICK).exit_code == 0
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path}/studies/c/study.db")
    stored = Settings.from_json(study.user_attrs["explore:settings"]).rungs
    assert stored == [dict(epochs=1, train_images=9000, resolution=8, width=0.05, seeds=TOP_SEEDS)]
    assert search("--study", "c").exit_code == 0  # left out: the stored rungs
    other = search("--study", "c", "--rungs", "3")
    assert other.exit_code == 2 and "rungs 1 ep x 9000 img" in other.output and "Traceback" not in other.output
    bad = search("--study", "d", "--rungs", "epochs=x", *QUICK)
    assert bad.exit_code == 2 and "--rungs: rung 1's epochs 'x'" in bad.output
    assert not (tmp_path / "studies" / "d").exists()


# Ties on the front -------------------------------------------------------------------------------------

def point(number, acc, flops, std=None, seeds=1, rung=0):
    return pareto.Point(number, acc, flops, 1, "x", space.dump(named("mobilenet")), "mobilenet", val_images=2000,
                        rung=rung, accuracy_std=std, seeds=seeds)


def test_the_noise_is_the_seed_spread_never_below_the_binomial_error():
    binomial = (0.9 * 0.1 / 2000) ** 0.5
    assert accuracy_noise(0.9, 2000) == pytest.approx(binomial)
    assert accuracy_noise(0.9, 2000, 0.02) == 0.02 and accuracy_noise(0.9, 2000, 0.001) == pytest.approx(binomial)
    assert point(0, 0.9, 1, std=0.02, seeds=2).shown == "0.9000 ± 0.0200"


def test_front_points_within_each_others_noise_are_marked_tied():
    # a: 0.900 ± 0.010 (2 seeds); b: 0.890 ± 0.007 (binomial): overlapping, so tied; c far below; d dominated
    pts = [point(0, 0.900, 300, std=0.010, seeds=2, rung=2), point(1, 0.890, 200), point(2, 0.800, 100),
           point(3, 0.895, 400)]
    assert pareto.ties(pts) == {0: [1], 1: [0], 2: []}  # d is off the front: not marked
    fig = pareto.figure("t", pts)
    rings = next(t for t in fig.data if t.meta == "ties" and t.visible)
    assert sorted(rings.x) == [200, 300] and "tied within noise with trial 1" in " ".join(rings.text)
    bars = [t for t in fig.data if t.meta == "trials"][0].error_y.array
    assert bars[0] == pytest.approx(0.010)
    found = summary.summarise(optuna.create_study(directions=["maximize", "minimize"]), Settings(), pts)
    rows = [r.as_dict() for r in found.front]
    assert [(r["trial"], r["tied_with"], r["rung"], r["seeds"]) for r in rows] == [(0, [1], 2, 2), (1, [0], 0, 1),
                                                                                   (2, [], 0, 1)]
    table = report._pareto_table(found)  # the report's
    assert "<th title='sort'>tied with</th>" in table and "0.9000 ± 0.0100 <small>rung 2</small>" in table
    assert "<td data-v='1'>1</td>" in table and "<td data-v='0'>-</td>" in table  # a tie of 1, and none
