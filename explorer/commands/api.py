"""explorer's Python API, which `explore search` itself is built on: `search`, `open_study`, `report`,
`fidelity`, each returning or taking a `Result` (explorer.analysis.results).

Every setting is a keyword named as its `explore search` flag (explorer.base.settings.FLAGS holds each
one's default and range, once): left out, a resumed study keeps its own and a new one takes the default,
exactly as on the command line. Your own data, (x, y) arrays or tensors, a torch Dataset or an .npz
file, is checked and fingerprinted by explorer.trial.userdata.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from ..analysis import fidelity as fidelity_check
from ..analysis import report as pages
from ..analysis.results import Result
from ..base.errors import UserError
from ..base.settings import FLAGS
from ..studies.store import existing_default, load_study
from ..trial import userdata
from . import pool, runner

SETTINGS = tuple(key for key in FLAGS if key != "dataset")  # `data` gives the dataset


def search(budget: str | float | None = None, space: str | None = None, data: Any = None,
           validation_data: Any = None, *, trials: int | None = None, study: str | None = None,
           storage: str | None = None, device: str = "auto", progress: bool | Console = True, jobs: int = 1,
           jobs_per_gpu: int | None = None, data_dir: str | Path | None = None, no_run: bool = False,
           **settings: Any) -> Result:
    """Search `space` for networks under `budget` on `data`; rerun with the same `study` to resume it.

    budget: FLOPs (multiply-adds) like "2GFLOPs", or a latency like "20ms"; needed for a new study.
    data: (x, y) NumPy arrays or torch tensors (N x C x H x W or N x H x W x C, uint8 or floats in
        [0, 1] or [0, 255]; labels 0 to K-1), a torch Dataset of (image, label), "npz:PATH", a named
        dataset ("fashion-mnist", "digits", ...) or "imagefolder:PATH". Default: fashion-mnist if it can
        be had, else digits. A class-balanced validation split is held out of it, unless
        `validation_data` (the same forms as `data`'s Python ones) is given.
    jobs: worker processes; jobs_per_gpu: instead, that many on each GPU `device` spreads over.
    progress: show the live view and the front (rich; renders in Jupyter too), or a Console to print to.
    settings: any other `explore search` flag as a keyword, e.g. epochs=1, sampler="tpe", max_params="5M".

    Ctrl-C (a notebook's interrupt) raises KeyboardInterrupt and leaves the study resumable. Bad settings
    or data raise one-line errors (explorer.commands.USER_ERRORS).
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise UserError(f"{unknown[0]}: not a setting of explorer.search; use data= for the dataset, or one of "
                        f"{', '.join(SETTINGS)}")
    jobs = pool.jobs_for(jobs, jobs_per_gpu, device)
    explicit = {k: v for k, v in dict(settings, space=space, trials=trials).items() if v is not None}
    if budget is not None:
        explicit["budget"] = str(budget)
    if data is not None or validation_data is not None:
        explicit["dataset"] = dataset_name(data, validation_data, jobs)
    console = progress if isinstance(progress, Console) else Console(quiet=not progress)
    try:
        return runner.search_command(explicit, study, storage, device, data_dir and Path(data_dir), no_run,
                                     console, jobs=jobs)
    except SystemExit as stop:
        if stop.code == 130:  # Ctrl-C: the study is left resumable and said so; Python's own signal for it
            raise KeyboardInterrupt from None
        raise


def dataset_name(data: Any, validation_data: Any, jobs: int = 1) -> str:
    """The study's dataset for `data`: a name as given, or the name your own data is held under."""
    if isinstance(data, (str, Path)) or data is None:
        if validation_data is not None:
            raise UserError("validation_data: give it with data=(x, y) or a Dataset; a named dataset or a file "
                            "brings its own validation split")
        return str(data)
    if jobs > 1:
        raise UserError(f"jobs: data given from Python stays in this process, so jobs={jobs} worker processes "
                        "can't read it; save it with np.savez(PATH, x=x, y=y) and pass data='npz:PATH'")
    return userdata.from_python(data, validation_data).name


def open_study(name: str, storage: str | None = None) -> Result:
    """An existing study, made from Python or by `explore search`: storage default studies/NAME/study.db."""
    study = load_study(name, storage)
    return Result(study, storage or existing_default(name))


def _result(study: Result | str, storage: str | None) -> Result:
    return study if isinstance(study, Result) else open_study(study, storage)


def report(study: Result | str, path: str | Path | None = None, *, by: list[str] | None = None,
           storage: str | None = None, force: bool = False) -> Path:
    """`explore report`'s page: to studies/STUDY/report.html, or to `path` (replaced only with `force`)."""
    result = _result(study, storage)
    return pages.write_report(result.name, result.url, by or ["family"], None if path is None else Path(path), force)


def fidelity(study: Result | str, top: int = 5, random: int = 5, *, data: Any = None, validation_data: Any = None,
             device: str = "auto", storage: str | None = None) -> fidelity_check.FidelityRecord:
    """`explore fidelity`: retrain the `top` and `random` trials longer and measure how well the proxy ranks
    them. A study made on data from Python in another process needs that `data` again."""
    result = _result(study, storage)
    if data is not None and dataset_name(data, validation_data) != result.settings.dataset:
        raise UserError(f"data: this is other data than study '{result.name}' searched on "
                        f"({result.settings.dataset})")
    return fidelity_check.run(result.study, result.settings, top, random, device=device)
