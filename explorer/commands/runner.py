"""What `explore search` does, from flags to a Pareto table: settings, study, live view, results."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path

import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from space.schema import load as load_genotype

from ..analysis import pareto
from ..base.budget import parse_budget, parse_count
from ..base.errors import UserError
from ..base.ladder import Rung, describe, parse_rungs
from ..base.settings import FLAGS, HEARTBEAT, Recipe, Settings, default_proxy_resolution
from ..scaleout import claim, signals
from ..search import objective, promotion
from ..search.study import open_study, refuse_other_settings, resolve_space
from ..studies.progress import SearchProgress
from ..studies.rungs import rung_of
from ..studies.storage import open_storage, redact
from ..studies.store import (
    completed,
    existing_default,
    rejected_count,
    settings_of,
    storage_url,
    study_dir,
)
from ..trial import data as datasets
from ..trial.candidate import Context, deploy_key, fit_latency_model, nearest_named, prepare
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
                   "seed", "trials", "prescreen", "prescreen_score", "stochastic_depth", "prune", "prune_k")


def make_settings(explicit: dict, stored: Settings | None) -> Settings:
    """Flags given win; then what the study stored; then the defaults."""
    base = vars(stored).copy() if stored else vars(DEFAULT).copy()
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
    if not (dataset in datasets.DATASETS or dataset.startswith(datasets.IMAGEFOLDER)):
        raise UserError(f"--dataset: unknown dataset '{dataset}'; choose one of "
                        f"{', '.join(datasets.DATASETS)} or {datasets.IMAGEFOLDER}PATH")
    proxy_resolution = explicit.get("proxy_resolution", base["proxy_resolution"] if stored
                                    else default_proxy_resolution(dataset))
    recipe = {**(base["recipe"] or DEFAULT.recipe), "seed": values["seed"],
              **{key: explicit[key] for key in ("epochs", "batch_size", "lr") if key in explicit}}
    try:
        recipe = Recipe.from_dict(recipe).to_dict()
    except ValueError as e:
        raise UserError(f"recipe: {e}") from None
    if "rungs" in explicit:  # the ladder is stored resolved, from rung 0: the proxy just settled
        base["rungs"] = parse_rungs(explicit["rungs"], Rung(recipe["epochs"], values["train_images"], proxy_resolution,
                                                            values["proxy_width"]))
    return Settings(**{**base, **values, "dataset": dataset, "proxy_resolution": proxy_resolution, "recipe": recipe})


def search_command(explicit: dict, study_name: str | None, storage: str | None, device: str,
                   data_dir: Path | None, no_run: bool, console: Console, jobs: int = 1) -> None:
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
    settings = make_settings(explicit, stored)
    if not stored and (settings.latency_budget or settings.objective == "latency"):
        settings.latency_device = asdict(deploy_key(device))  # before any trial is priced on it
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
        return
    if done < settings.trials or promotion.pending(study, len(settings.rungs)):
        train_study(study, url, settings, device, data_dir, jobs, HEARTBEAT, console, ctx)
    report(study, settings, console)


def report(study, settings: Settings, console: Console, plot: bool = True, pts: list | None = None) -> None:
    pts = pareto.points(study) if pts is None else pts
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    console.print(f"{len(pts)} completed, {rejected_count(study)} draws rejected before training "
                  f"(impossible or over budget), {len(failed)} failed", highlight=False)
    stopped = sum("pruned_at_epoch" in t.user_attrs for t in trials)
    replaced = sum("replaced" in t.user_attrs for t in trials)
    if stopped or replaced:
        console.print(f"{stopped} stopped early by --prune, {replaced} draws replaced by --prescreen", highlight=False)
    promoted = Counter(rung_of(t) for t in trials if rung_of(t) and t.state == optuna.trial.TrialState.COMPLETE)
    if promoted:
        counts = ", ".join(f"{n} at rung {r}" for r, n in sorted(promoted.items()))
        console.print(f"promoted and trained again: {counts} (rungs above the proxy: {describe(settings.rungs)})",
                      highlight=False, soft_wrap=True)
    if not pts:
        return
    table = Table(title=f"Pareto front of {study.study_name} (FLOPs are multiply-adds at {settings.resolution}px)")
    timed = front_axis(pts, settings) == "latency"
    rungs = any(p.rung for p in pts)
    for col in ("rank", "trial", "family", "GFLOPs", "M params", *(["ms (predicted)"] if timed else []),
                *(["rung"] if rungs else []), "accuracy ± noise", "tied with", "nearest named"):
        table.add_column(col, justify="left" if col in ("family", "tied with", "nearest named") else "right",
                         no_wrap=True)
    for r in pareto_rows(pts, settings):
        table.add_row(str(r["rank"]), str(r["trial"]), r["family"], f"{r['flops'] / 1e9:.3f}",
                      f"{r['params'] / 1e6:.2f}", *([f"{r['latency_ms']:.2f}"] if timed else []),
                      *([f"{r['rung']}" + (f" ({r['seeds']} seeds)" if r["seeds"] > 1 else "")] if rungs else []),
                      f"{r['accuracy']:.4f} ± {r['noise']:.4f}", ", ".join(map(str, r["tied_with"])) or "-",
                      r["nearest_named"] if not r["reference"] else f"{r['nearest_named']} (itself)")
    console.print(table)
    console.print(TIES_NOTE, highlight=False, soft_wrap=True)
    noise = pareto.noise_floor(pts)
    if noise:
        console.print(noise, highlight=False, soft_wrap=True)
    if not plot:
        return
    path = study_dir(study.study_name) / "pareto.html"
    pareto.write_plot(study.study_name, pts, path, x=front_axis(pts, settings), resolution=settings.resolution,
                      budget=settings.budget, max_params=settings.max_params, latency_budget=settings.latency_budget)
    console.print(f"plot: {path}", highlight=False)


TIES_NOTE = ("± noise: the seed spread of a genotype's highest rung where it trained several seeds, never less than "
             "the validation split's binomial standard error; \"tied with\": front points whose ± intervals overlap, "
             "which this search can't tell apart")


def front_axis(pts, settings: Settings) -> str:
    """The cost the study's front is on: its second objective, where every point has it."""
    return settings.objective if settings.objective in pareto.axes_of(pts) else "flops"


def pareto_rows(pts, settings: Settings) -> list[dict]:
    """The Pareto set, most accurate first, as plain rows (`explore pareto --json/--csv`)."""
    rows, axis = [], front_axis(pts, settings)
    ties = pareto.ties(pts, axis)
    for rank, p in enumerate(sorted(pareto.front(pts, axis), key=lambda p: -p.accuracy), 1):
        near = p.reference or nearest_named(load_genotype(p.genotype), p.flops, p.params, settings.resolution)
        rows.append(dict(rank=rank, trial=p.number, family=p.family, flops=p.flops, params=p.params,
                         accuracy=p.accuracy, noise=p.noise, tied_with=ties[p.number], rung=p.rung, seeds=p.seeds,
                         nearest_named=near, reference=bool(p.reference), digest=p.digest,
                         **({"latency_ms": p.latency_ms} if p.latency_ms is not None else {})))
    return rows


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
            with SearchProgress(settings.trials, done, rejected_count(study), console) as progress:
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
