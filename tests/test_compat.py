"""A study made by an earlier version of explore resumes and reads unchanged.

tests/data/study-bb860fb.db was made by commit bb860fb (explorer/ still one flat folder) with
`explore search --budget 600MFLOPs --dataset digits --trials 3 --epochs 1 --study old`.
"""
import json
import shutil
from pathlib import Path

import optuna
import pytest
from test_search import explore, trials_of

from explorer.base.errors import UserError
from explorer.base.settings import Recipe, Settings
from explorer.studies.store import SETTINGS_KEY, settings_of

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


def test_settings_keep_their_stored_json_with_a_typed_recipe():
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{OLD}")
    stored = json.loads(study.user_attrs[SETTINGS_KEY])
    settings = Settings.from_json(study.user_attrs[SETTINGS_KEY])
    assert isinstance(settings.recipe, Recipe) and settings.recipe.to_dict() == stored["recipe"]
    again = json.loads(settings.to_json())
    assert again["recipe"] == stored["recipe"] and Settings.from_json(settings.to_json()) == settings
    assert Settings(recipe={"epochs": 3}).recipe == Recipe(epochs=3)  # a dict, as stored or written, is read


def test_unreadable_stored_settings_are_one_line(tmp_path):
    study = optuna.create_study(study_name="odd", directions=["maximize", "minimize"])
    study.set_user_attr(SETTINGS_KEY, json.dumps({"recipe": {"epochs": 1, "warmup": 3}}))
    with pytest.raises(UserError, match="study 'odd' holds settings this explore can't read .*warmup"):
        settings_of(study)
