"""Constructed studies for the refinement tests: trials drawn through Optuna's own ask/tell, as search
draws them (the space's parameters and distributions), with the attributes search records, and an
error set by a known rule instead of training."""
import random

import optuna

import space
from explorer.base.settings import Settings
from explorer.studies.store import store_settings
from explorer.sweep.study import resolve_space
from explorer.trial.candidate import price
from space.axes import design_axes
from space.sampling import sample


def good_residual(params) -> bool:
    return params["residual.depth3"] <= 8 and params["residual.scale"] == 1.0


def residual_error(params, flops) -> float:
    """The known rule: 0.2 in the good region (depth3 <= 8, scale 1.0), worse by 0.1 for another scale and
    by 0.15 for a deeper stage 3."""
    return 0.2 + 0.1 * (params["residual.scale"] != 1.0) + 0.15 * (params["residual.depth3"] > 8)


def constructed_study(name: str, storage: str, trials: int = 80, seed: int = 0, space_name: str = "residual",
                      error_of=None, reference: dict | None = None):
    """A study of `trials` completed draws from `space_name`, erring by `error_of(params, flops)` (default:
    `residual_error`) plus noise of +-0.02. Drawn in memory, then stored in `storage` at once (fast)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    doc, digest = resolve_space(space_name)
    settings = Settings(space=space_name, space_doc=doc, space_digest=digest, budget=10 ** 11, trials=trials,
                        sampler="random", seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    noise = random.Random(seed)
    error_of = error_of or residual_error
    while len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) < trials:
        trial = study.ask()
        g = sample(doc, trial, short=True)
        cx = price(g, settings.resolution)
        for key, value in {"genotype": space.schema.canonical_json(g), "digest": space.digest(g), **design_axes(g),
                           "flops": cx.flops, "params": cx.params, "dataset": "digits", **(reference or {})}.items():
            trial.set_user_attr(key, value)
        accuracy = 1.0 - error_of(trial.params, cx.flops) + noise.uniform(-0.02, 0.02)
        study.tell(trial, [accuracy, cx.flops])
    stored = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    store_settings(stored, settings)
    stored.add_trials(study.get_trials())
    return stored
