"""What `explore search` does, from flags to a Pareto table: settings, study, live view, results."""
from __future__ import annotations

from pathlib import Path

import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..analysis import pareto, summary
from ..analysis.report import write_pareto_plot
from ..analysis.results import Result
from ..base.budget import parse_budget, parse_count
from ..base.errors import UserError
from ..base.ladder import Rung, describe, parse_rungs
from ..base.settings import (
    FLAGS,
    HEARTBEAT,
    Recipe,
    Settings,
    default_proxy_resolution,
    new_study_defaults,
    proxy_preset,
)
from ..scaleout import claim, signals
from ..studies.progress import SearchProgress
from ..studies.storage import open_storage, redact
from ..studies.store import (
    completed,
    existing_default,
    rejected_count,
    settings_of,
    storage_url,
)
from ..sweep import objective, promotion
from ..sweep.study import open_study, refuse_other_settings, resolve_space
from ..trial import data as datasets
from ..trial import userdata
from ..trial.candidate import Context, check_device, deploy_key, fit_latency_model, prepare
from ..trial.device import device_settings
from ..trial.trainer import resolve_device
from . import pool

DEFAULT = Settings()


def checked(key: str, value):
    """A setting's value after its flag's check (explorer.base.settings.FLAGS)."""
    FLAGS[key].check(key, value)
    if key == "stochastic_depth" and value is not None and value <= 0:
        raise UserError("--stochastic-depth: the last block's survival probability p_L must be in (0, 1], e.g. 0.5")
    return None if key == "stochastic_depth" and value == 1 else value  # p_L = 1 never drops a block: off


def with_dataset(explicit: dict, data_dir: Path | None, console: Console) -> dict:
    """`explicit` with the dataset a new study uses: the one asked for, else the default
    when it can be had, else the fallback, with a one-line notice that says why."""
    if "dataset" in explicit:
        return explicit
    name, notice = datasets.default_dataset(data_dir)
    if notice:
        console.print(f"[yellow]note:[/] {escape(notice)}", highlight=False, soft_wrap=True)
    return {**explicit, "dataset": name}


def default_study_name(space_name: str, budget: str, dataset: str) -> str:
    stem = Path(space_name).stem
    return "-".join(part.replace("/", "_").replace(":", "_") for part in (stem, budget.replace(" ", ""), dataset))


def find_stored(study_name: str, url: str) -> Settings | None:
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return None  # nothing stored; don't create the file before the flags are known to be good
    try:
        return settings_of(optuna.load_study(study_name=study_name, storage=open_storage(url)))
    except KeyError:
        return None


STORED_AS_GIVEN = ("space", "resolution", "proxy_width", "proxy_depth", "train_images", "val_images", "sampler",
                   "seed", "trials", "prescreen", "prescreen_score", "stochastic_depth", "prune", "prune_k",
                   "cudnn_benchmark")


def make_settings(explicit: dict, stored: Settings | None, here: dict | None = None) -> Settings:
    """Flags given win; then what the study stored; then the defaults of the device's preset.

    `here`: the device trials train on (explorer.trial.device.device_settings), stored by a new study;
    a stored study keeps its own, checked against this one's by `check_device`."""
    here = here or {"device": DEFAULT.device, "device_name": DEFAULT.device_name, "precision": DEFAULT.precision}
    base = vars(stored).copy() if stored else {**vars(new_study_defaults(here["device"])), **here}
    if "budget" in explicit:
        base["budget"], base["latency_budget"] = parse_budget(explicit["budget"])
    elif not stored:
        raise UserError("--budget: a new study needs a budget, e.g. --budget 2GFLOPs (multiply-adds) or 20ms")
    if "objective" in explicit:
        base["objective"] = checked("objective", explicit["objective"])
    elif not stored and base["latency_budget"]:
        base["objective"] = "latency"  # a time budget: search accuracy against latency unless told otherwise
    if "max_params" in explicit:
        base["max_params"] = parse_count(explicit["max_params"])
    values = {key: checked(key, explicit.get(key, base[key])) for key in STORED_AS_GIVEN}
    if "space" in explicit or not stored:
        base["space_doc"], base["space_digest"] = resolve_space(values["space"])
    dataset = explicit.get("dataset", base["dataset"])
    if not (dataset in datasets.DATASETS or dataset.startswith((datasets.IMAGEFOLDER, *userdata.PREFIXES))):
        raise UserError(f"--dataset: unknown dataset '{dataset}'; choose one of "
                        f"{', '.join(datasets.DATASETS)}, {datasets.IMAGEFOLDER}PATH or {userdata.NPZ}PATH")
    data = userdata.identity_of(dataset)  # your own data, read and checked now: resuming with other data is refused
    proxy_resolution = explicit.get("proxy_resolution", base["proxy_resolution"] if stored
                                    else default_proxy_resolution(dataset, data and data["shape"][-1],
                                                                  proxy_preset(here["device"])))
    recipe = {**base["recipe"].to_dict(), "seed": values["seed"],
              **{key: explicit[key] for key in ("epochs", "batch_size", "lr") if key in explicit}}
    try:
        recipe = Recipe.from_dict(recipe)
    except ValueError as e:
        raise UserError(f"recipe: {e}") from None
    if "rungs" in explicit:  # the ladder is stored resolved, from rung 0: the proxy just settled
        base["rungs"] = parse_rungs(explicit["rungs"], Rung(recipe.epochs, values["train_images"], proxy_resolution,
                                                            values["proxy_width"]))
    return Settings(**{**base, **values, "dataset": dataset, "data": data, "proxy_resolution": proxy_resolution,
                       "recipe": recipe})


def search_command(explicit: dict, study_name: str | None, storage: str | None, device: str,
                   data_dir: Path | None, no_run: bool, console: Console, jobs: int = 1) -> Result:
    if study_name is None:
        if "budget" not in explicit:
            raise UserError("--budget: a new study needs a budget, e.g. --budget 2GFLOPs (multiply-adds); "
                            "to resume a study, name it with --study")
        explicit = with_dataset(explicit, data_dir, console)
        study_name = default_study_name(explicit.get("space", DEFAULT.space), explicit["budget"],
                                        explicit["dataset"])
    url = storage_url(study_name, storage)
    stored = find_stored(study_name, url)
    if stored is None:
        explicit = with_dataset(explicit, data_dir, console)
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise UserError(f"--device: {e}") from None
    if stored:
        check_device(stored, dev)  # in one line, before the other settings are compared
    settings = make_settings(explicit, stored, device_settings(dev))
    if not stored and (settings.latency_budget or settings.objective == "latency"):
        settings.latency_device = deploy_key(device)  # before any trial is priced on it
    if stored:
        refuse_other_settings(study_name, settings, stored)  # before reading a dataset it may not need
    # the dataset is read (or, with --no-run, found) before the study exists: a bad or absent one leaves nothing
    if no_run:
        ctx = None
        datasets.ensure_available(settings.dataset, data_dir)
    else:
        ctx = prepare(settings, device, data_dir)
    study = open_study(study_name, url, settings, heartbeat=HEARTBEAT)
    done = len(completed(study))
    verb = "resuming" if stored else "created"
    console.print(f"{verb} study [bold]{study_name}[/] in {redact(url)}: space {settings.space}, "
                  f"budget {settings.budget_text} at {settings.resolution}px, "
                  f"dataset {settings.dataset}, {done}/{settings.trials} trials done", highlight=False)
    if no_run:
        console.print("--no-run: the study and its settings are stored; start workers with "
                      f"`explore worker --study {study_name}" + (f" --storage {storage}`" if storage else "`"))
        return Result(study, url)
    if done < settings.trials or promotion.pending(study, len(settings.rungs)):
        train_study(study, url, settings, device, data_dir, jobs, HEARTBEAT, console, ctx)
    report(study, settings, console)
    return Result(study, url)


def report(study, settings: Settings, console: Console, plot: bool = True, pts: list | None = None) -> None:
    pts = pareto.points(study, settings.objective) if pts is None else pts
    found = summary.summarise(study, settings, pts)
    states = found.states
    console.print(f"{len(pts)} completed, {states.get('rejected', 0)} draws rejected before training "
                  f"(impossible or over budget), {states.get('fail', 0)} failed", highlight=False)
    if states.get("pruned") or states.get("replaced"):
        console.print(f"{states.get('pruned', 0)} stopped early by --prune, {states.get('replaced', 0)} draws "
                      "replaced by --prescreen", highlight=False)
    if found.promoted:
        counts = ", ".join(f"{n} at rung {r}" for r, n in sorted(found.promoted.items()))
        console.print(f"promoted and trained again: {counts} (rungs above the proxy: {describe(settings.rungs)})",
                      highlight=False, soft_wrap=True)
    if not pts:
        return
    table = Table(title=f"Pareto front of {study.study_name} on {pareto.AXIS_TITLES[found.axis]} "
                        f"(FLOPs are multiply-adds at {settings.resolution}px)")
    rungs = any(r.point.rung for r in found.front)
    for col in ("rank", "trial", "family", "GFLOPs", "M params", *(["ms (predicted)"] if found.timed else []),
                *(["rung"] if rungs else []), "accuracy ± noise", "tied with", "nearest named"):
        table.add_column(col, justify="left" if col in ("family", "tied with", "nearest named") else "right",
                         no_wrap=True)
    for r in found.front:
        p = r.point
        table.add_row(str(r.rank), str(p.number), p.family, f"{p.flops / 1e9:.3f}", f"{p.params / 1e6:.2f}",
                      *([f"{p.latency_ms:.2f}"] if found.timed else []),
                      *([f"{p.rung}" + (f" ({p.seeds} seeds)" if p.seeds > 1 else "")] if rungs else []),
                      p.shown, ", ".join(map(str, r.tied_with)) or "-",
                      f"{r.nearest} (itself)" if r.itself else r.nearest)
    console.print(table)
    console.print(TIES_NOTE, highlight=False, soft_wrap=True)
    noise = pareto.noise_floor(pts)
    if noise:
        console.print(noise, highlight=False, soft_wrap=True)
    if not plot:
        return
    path = write_pareto_plot(study.study_name, settings, pts, found.axis)
    console.print(f"plot: {path}", highlight=False)


TIES_NOTE = ("± noise: the seed spread of a genotype's highest rung where it trained several seeds, never less than "
             "the validation split's binomial standard error; \"tied with\": front points whose ± intervals overlap, "
             "which this search can't tell apart")


# Workers (explorer/claim.py) ---------------------------------------------------------------------

def train_study(study, url: str, settings: Settings, device: str, data_dir: Path | None, jobs: int,
                heartbeat: tuple[int, int], console: Console, ctx: Context | None = None) -> None:
    """Train the study's trials here: in this process with a live view, or in `jobs` worker processes.

    `ctx`: the data and device already prepared (and checked) by the caller."""
    if jobs > 1:
        if fit_latency_model(settings, device):
            console.print("fitted the latency model for this device once, before the workers start", highlight=False)
        code = pool.run_pool(study.study_name, url, jobs, device, data_dir, heartbeat, settings, console)
        _stopped(code, console)
        if code:
            raise SystemExit(code)  # the worker printed its error
    else:
        ctx = ctx or prepare(settings, device, data_dir)
        done = len(completed(study))
        old = signals.install_signal_handlers()
        try:
            with SearchProgress(settings.trials, done, rejected_count(study), console,
                                settings.objective) as progress:
                try:
                    objective.run(study, ctx, progress)
                except KeyboardInterrupt:
                    _stopped(130, console)
                except signals.WorkerStopped:
                    _stopped(143, console)
        finally:
            signals.restore_signal_handlers(old)
    held = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if claim.claimed(t)]
    target = settings_of(study).trials
    if held and len(completed(study)) < target:
        console.print(f"[yellow]{len(completed(study))}/{target} trials done[/]: the rest are held by "
                      f"trial{'s' if len(held) > 1 else ''} {', '.join(map(str, held))}, still RUNNING in "
                      "other claim. A journal storage has no heartbeat: if those workers were killed, run "
                      f"`explore worker --study {study.study_name} --storage {redact(url)} --reclaim` once no "
                      "worker is running", highlight=False)


def _stopped(code: int, console: Console) -> None:
    if code == 130:
        console.print("[yellow]interrupted[/]: the running trial is marked failed; "
                      "rerun the same command to resume")
        raise SystemExit(130)
    if code == 143:
        console.print("[yellow]stopped (SIGTERM)[/]: the running trial is released and will be retried "
                      "by the next worker")
        raise SystemExit(143)


def worker_command(study_name: str, storage: str | None, jobs: int, device: str, data_dir: Path | None,
                   heartbeat: int, grace: int, reclaim: bool, console: Console) -> None:
    """`explore worker`: join an existing study, settings and all, and train until it holds its target."""
    if grace <= heartbeat:
        raise UserError(f"--grace: {grace} s must be longer than --heartbeat ({heartbeat} s), "
                        "or live workers' trials would be failed")
    url = storage or existing_default(study_name)
    study, settings = pool.join(study_name, url, (heartbeat, grace))
    if reclaim:
        numbers = claim.reclaim(study)
        console.print(f"--reclaim: {len(numbers)} running trial{'s' if len(numbers) != 1 else ''} failed and "
                      "enqueued again" + (f" ({', '.join(map(str, numbers))})" if numbers else ""), highlight=False)
    done = len(completed(study))
    console.print(f"joined study [bold]{study_name}[/] in {redact(url)}: space {settings.space}, "
                  f"budget {settings.budget_text}, dataset {settings.dataset}, "
                  f"{done}/{settings.trials} trials done, {jobs} worker{'s' if jobs > 1 else ''} here",
                  highlight=False)
    if done < settings.trials or promotion.pending(study, len(settings.rungs)):
        train_study(study, url, settings, device, data_dir, jobs, (heartbeat, grace), console)
    console.print(f"study {study_name}: {len(completed(study))}/{settings_of(study).trials} trials done",
                  highlight=False)
