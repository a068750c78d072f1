"""Host work per trial on a database stays small and flat (issue 22): a trial's attributes are written in one
transaction, and a claim or a pruning check reads only what changed, not the whole study. The timings
themselves are benchmarks/host_overhead.py's (benchmarks/RESULTS.md); these tests count SQL statements and
rows, which don't depend on the machine's load."""
import optuna
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from explorer.scaleout.claim import work
from explorer.studies import internals
from explorer.studies.storage import open_storage
from explorer.sweep import pruning

ATTRS = {"genotype": '{"stages": []}', "flops": 10 ** 9, "depth": 20, "separable": False, "kernels": [3, 5],
         "axes": {"width": 64, "growth": None}, "wall_time": 1.5}


def storage_url(kind, tmp_path, request, name):
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    return request.getfixturevalue("postgres").create_database(name)


class Traffic:
    """SQL statements, commits and rows fetched on a study's database while counting."""

    def __init__(self, study):
        self.statements = self.commits = self.rows = 0
        self.on = False
        engine = internals.rdb_backend(study).engine
        sqlalchemy.event.listen(engine, "after_cursor_execute", self._executed)
        sqlalchemy.event.listen(engine, "commit", self._committed)

    def _executed(self, conn, cursor, statement, parameters, context, executemany):
        if self.on:
            self.statements += 1
            self.rows += max(cursor.rowcount, 0) if statement.lstrip().upper().startswith("SELECT") else 0

    def _committed(self, conn):
        self.commits += self.on


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_trials_attributes_are_written_in_one_transaction(kind, tmp_path, request):
    url = storage_url(kind, tmp_path, request, "attrs")
    study = optuna.create_study(storage=open_storage(url), directions=["maximize", "minimize"])
    batched, twin = study.ask(), study.ask()
    batched.set_user_attr("flops", 1)  # overwritten, as set_user_attr would
    traffic = Traffic(study)
    traffic.on = True
    internals.set_user_attrs(batched, ATTRS)
    traffic.on = False
    assert (traffic.statements, traffic.commits) == (2, 1)  # the trial's state, then every row at once
    for key, value in ATTRS.items():
        twin.set_user_attr(key, value)
    assert batched.user_attrs == twin.user_attrs == ATTRS
    stored = optuna.load_study(study_name=study.study_name, storage=url).get_trials()
    assert stored[0].user_attrs == stored[1].user_attrs == ATTRS


def test_a_finished_trial_refuses_attributes_and_nothing_is_written(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(storage=open_storage(url), directions=["maximize", "minimize"])
    trial = study.ask()
    # another worker failed it meanwhile (its heartbeat was overdue)
    internals.storage(study).set_trial_state_values(internals.trial_id(trial), TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        internals.set_user_attrs(trial, ATTRS)
    assert optuna.load_study(study_name=study.study_name, storage=url).trials[0].user_attrs == {}


@pytest.mark.parametrize("storage", [lambda tmp: optuna.storages.InMemoryStorage(),
                                     lambda tmp: open_storage(f"journal:{tmp}/study.log")])
def test_other_storages_get_one_call_per_attribute(storage, tmp_path):
    study = optuna.create_study(storage=storage(tmp_path), directions=["maximize", "minimize"])
    trial = study.ask()
    internals.set_user_attrs(trial, ATTRS)
    assert trial.user_attrs == study.get_trials()[0].user_attrs == ATTRS


def rows_read_by_a_steady_trial(url: str, finished: int) -> int:
    """Rows a worker's second trial (a claim, a pruning check, the result) reads from a study that holds
    `finished` completed trials; its first trial has read the study once."""
    space = {"x": FloatDistribution(0, 1)}
    study = optuna.create_study(storage=open_storage(url, (60, 120)), directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.add_trials([create_trial(state=TrialState.COMPLETE, values=[0.5, 1e9], params={"x": 0.5},
                                   distributions=space, user_attrs={"flops": 1e9}, intermediate_values={1: 0.4})
                      for _ in range(finished)])
    traffic = Traffic(study)

    def objective(trial):
        accuracy = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("flops", 2e9)
        internals.report(trial, 1, accuracy)
        pruning.check(trial, 1, 2, accuracy)
        traffic.on = False  # the second trial's claim and check are counted, not its writes and result
        return accuracy, 2e9

    work(study, objective, target=lambda: finished + 1)
    traffic.on = True
    work(study, objective, target=lambda: finished + 2)
    return traffic.rows


def test_claims_and_pruning_checks_read_what_changed_not_the_study(postgres):
    """Rows fetched are counted on PostgreSQL (SQLite doesn't report them): the same for 5 finished
    trials as for 60."""
    few = rows_read_by_a_steady_trial(postgres.create_database("few"), 5)
    many = rows_read_by_a_steady_trial(postgres.create_database("many"), 60)
    assert 0 < few == many
