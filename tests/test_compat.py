"""A study made by an earlier version of explore resumes and reads unchanged.

tests/data/study-bb860fb.db was made by commit bb860fb (explorer/ still one flat folder) with
`explore search --budget 600MFLOPs --dataset digits --trials 3 --epochs 1 --study old`.
"""
import shutil
from pathlib import Path

import optuna
from test_search import explore, trials_of

OLD = Path(__file__).parent / "data" / "study-bb860fb.db"


def test_old_study_resumes_and_reads(tmp_path):
    (tmp_path / "studies" / "old").mkdir(parents=True)
    shutil.copy(OLD, tmp_path / "studies" / "old" / "study.db")
    before = [(t.number, t.state, t.values, t.params) for t in trials_of(tmp_path, "old")]
    assert sum(state == optuna.trial.TrialState.COMPLETE for _, state, _, _ in before) == 3

    run = explore("search", "--study", "old", "--trials", "4", cwd=tmp_path)
    assert "resum" in run.stdout.lower() + run.stderr.lower()
    after = trials_of(tmp_path, "old")
    assert [(t.number, t.state, t.values, t.params) for t in after[:len(before)]] == before
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in after) == 4

    shown = explore("pareto", "old", cwd=tmp_path)
    assert "Pareto front of old" in shown.stdout
    explore("report", "old", cwd=tmp_path)
    assert (tmp_path / "studies" / "old" / "report.html").stat().st_size > 0
