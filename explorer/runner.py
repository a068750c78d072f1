"""What `explore search` does, from flags to a Pareto table: settings, study, live view, results."""
from __future__ import annotations

from pathlib import Path

import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from space.schema import load as load_genotype

from . import data as datasets
from . import pareto, search
from .budget import format_flops, parse_count, parse_flops
from .errors import UserError
from .proxy import ProxySpec
from .study import Settings, open_storage, redact, settings_of, storage_url, study_dir

PROXY = ProxySpec()
DEFAULTS = dict(space="union", dataset=datasets.DEFAULT_DATASET, trials=12, epochs=PROXY.epochs,
                batch_size=PROXY.batch_size, resolution=224, proxy_width=PROXY.width, proxy_depth=PROXY.depth,
                train_images=PROXY.train_images, val_images=None, sampler="nsga2", seed=0)
# Pre-screening, stochastic depth and pruning (explorer/zero_cost.py, space/network.py, explorer/pruning.py).
BEYOND_DEFAULTS = dict(prescreen=1, prescreen_score="synflow", stochastic_depth=None, prune="none", prune_k=2)


def beyond_settings(pick) -> dict:
    """The pre-screening, stochastic-depth and pruning settings, checked."""
    from .pruning import PRUNERS
    from .zero_cost import SCORES
    values = {key: pick(key) for key in BEYOND_DEFAULTS}
    values = {key: BEYOND_DEFAULTS[key] if value is None else value for key, value in values.items()}
    if values["prescreen"] < 1:
        raise UserError("--prescreen: the number of candidates per trial must be at least 1 (1: off)")
    if values["prescreen_score"] not in SCORES:
        raise UserError(f"--prescreen-score: unknown score '{values['prescreen_score']}'; "
                        f"choose one of {', '.join(SCORES)}")
    if values["stochastic_depth"] is not None and not 0 < values["stochastic_depth"] <= 1:
        raise UserError("--stochastic-depth: the last block's survival probability p_L must be in (0, 1], e.g. 0.5")
    if values["stochastic_depth"] == 1:
        values["stochastic_depth"] = None  # p_L = 1 never drops a block: the same as off
    if values["prune"] not in PRUNERS:
        raise UserError(f"--prune: unknown pruner '{values['prune']}'; choose one of {', '.join(PRUNERS)}")
    if values["prune_k"] < 1:
        raise UserError("--prune-k: a trial is stopped when at least k >= 1 trials dominate it")
    return values


def default_proxy_resolution(dataset: str) -> int:
    """The default proxy's for the 28 px sets; digits' 8 px upsampled; 32 px for colour images."""
    if dataset in ("fashion-mnist", "mnist"):
        return PROXY.resolution
    return 16 if dataset == "digits" else 32


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


def make_settings(explicit: dict, stored: Settings | None) -> Settings:
    """Flags given win; then what the study stored; then the defaults."""
    base = vars(stored).copy() if stored else {}

    def pick(key):
        if key in explicit:
            return explicit[key]
        if key in base:
            return base[key]
        return DEFAULTS.get(key)

    if "budget" in explicit:
        budget = parse_flops(explicit["budget"])
    elif stored:
        budget = stored.budget
    else:
        raise UserError("--budget: a new study needs a budget, e.g. --budget 2GFLOPs (multiply-adds)")
    max_params = parse_count(explicit["max_params"]) if "max_params" in explicit else base.get("max_params")
    if "space" in explicit or not stored:
        space_doc, digest = search.resolve_space(pick("space"))
    else:
        space_doc, digest = stored.space_doc, stored.space_digest
    dataset = pick("dataset")
    if not (dataset in datasets.DATASETS or dataset.startswith("imagefolder:")):
        raise UserError(f"--dataset: unknown dataset '{dataset}'; choose one of "
                        f"{', '.join(datasets.DATASETS)} or imagefolder:PATH")
    sampler = pick("sampler")
    if sampler not in search.SAMPLERS:
        raise UserError(f"--sampler: unknown sampler '{sampler}'; choose one of {', '.join(search.SAMPLERS)}")
    seed = pick("seed")
    recipe = dict(base.get("recipe") or {})
    recipe.update(epochs=explicit.get("epochs", recipe.get("epochs", DEFAULTS["epochs"])),
                  batch_size=explicit.get("batch_size", recipe.get("batch_size", DEFAULTS["batch_size"])), seed=seed)
    if "lr" in explicit:
        recipe["lr"] = explicit["lr"]
    try:
        from .trainer import Recipe
        recipe = Recipe.from_dict(recipe).to_dict()
    except ValueError as e:
        raise UserError(f"recipe: {e}") from None
    return Settings(space=pick("space"), space_doc=space_doc, space_digest=digest, budget=budget,
                    max_params=max_params, resolution=pick("resolution"), dataset=dataset,
                    proxy_resolution=explicit.get("proxy_resolution", base.get("proxy_resolution",
                                                                                default_proxy_resolution(dataset))),
                    proxy_width=pick("proxy_width"), proxy_depth=pick("proxy_depth"),
                    train_images=pick("train_images"), val_images=pick("val_images"), recipe=recipe,
                    sampler=sampler, seed=seed, trials=pick("trials"), **beyond_settings(pick),
                    short_names=stored.short_names if stored else Settings.short_names)


def search_command(explicit: dict, study_name: str | None, storage: str | None, device: str,
                   data_dir: Path | None, no_run: bool, console: Console, jobs: int = 1) -> None:
    if study_name is None:
        if "budget" not in explicit:
            raise UserError("--budget: a new study needs a budget, e.g. --budget 2GFLOPs (multiply-adds); "
                            "to resume a study, name it with --study")
        explicit = with_dataset(explicit, data_dir, console)
        study_name = default_study_name(explicit.get("space", DEFAULTS["space"]), explicit["budget"],
                                        explicit["dataset"])
    url = storage_url(study_name, storage)
    stored = find_stored(study_name, url)
    if stored is None:
        explicit = with_dataset(explicit, data_dir, console)
    settings = make_settings(explicit, stored)
    from .workers import DEFAULT_HEARTBEAT
    if stored:
        search.refuse_other_settings(study_name, settings, stored)  # before reading a dataset it may not need
    # the dataset is read (or, with --no-run, found) before the study exists: a bad or absent one leaves nothing
    if no_run:
        ctx = None
        datasets.ensure_available(settings.dataset, data_dir)
    else:
        ctx = search.prepare(settings, device, data_dir)
    study = search.open_study(study_name, url, settings, heartbeat=DEFAULT_HEARTBEAT)
    done = len(search.completed(study))
    verb = "resuming" if stored else "created"
    console.print(f"{verb} study [bold]{study_name}[/] in {redact(url)}: space {settings.space}, "
                  f"budget {format_flops(settings.budget)} (multiply-adds) at {settings.resolution}px, "
                  f"dataset {settings.dataset}, {done}/{settings.trials} trials done", highlight=False)
    if no_run:
        console.print("--no-run: the study and its settings are stored; start workers with "
                      f"`explore worker --study {study_name}" + (f" --storage {storage}`" if storage else "`"))
        return
    if done < settings.trials:
        train_study(study, url, settings, device, data_dir, jobs, DEFAULT_HEARTBEAT, console, ctx)
    report(study, settings, console)


def report(study, settings: Settings, console: Console, plot: bool = True, pts: list | None = None) -> None:
    pts = pareto.points(study) if pts is None else pts
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    console.print(f"{len(pts)} completed, {search.rejected_count(study)} draws rejected before training "
                  f"(impossible or over budget), {len(failed)} failed", highlight=False)
    stopped = sum("pruned_at_epoch" in t.user_attrs for t in trials)
    replaced = sum("replaced" in t.user_attrs for t in trials)
    if stopped or replaced:
        console.print(f"{stopped} stopped early by --prune, {replaced} draws replaced by --prescreen", highlight=False)
    if not pts:
        return
    table = Table(title=f"Pareto front of {study.study_name} (FLOPs are multiply-adds at {settings.resolution}px)")
    for col in ("rank", "trial", "family", "GFLOPs", "M params", "accuracy", "nearest named"):
        table.add_column(col, justify="left" if col in ("family", "nearest named") else "right", no_wrap=True)
    for r in pareto_rows(pts, settings):
        table.add_row(str(r["rank"]), str(r["trial"]), r["family"], f"{r['flops'] / 1e9:.3f}",
                      f"{r['params'] / 1e6:.2f}", f"{r['accuracy']:.4f}",
                      r["nearest_named"] if not r["reference"] else f"{r['nearest_named']} (itself)")
    console.print(table)
    noise = pareto.noise_floor(pts)
    if noise:
        console.print(noise, highlight=False, soft_wrap=True)
    if not plot:
        return
    path = study_dir(study.study_name) / "pareto.html"
    pareto.write_plot(study.study_name, pts, path, resolution=settings.resolution, budget=settings.budget,
                      max_params=settings.max_params)
    console.print(f"plot: {path}", highlight=False)


def pareto_rows(pts, settings: Settings) -> list[dict]:
    """The Pareto set, most accurate first, as plain rows (`explore pareto --json/--csv`)."""
    rows = []
    for rank, p in enumerate(sorted(pareto.front(pts), key=lambda p: -p.accuracy), 1):
        near = p.reference or search.nearest_named(load_genotype(p.genotype), p.flops, p.params, settings.resolution)
        rows.append(dict(rank=rank, trial=p.number, family=p.family, flops=p.flops, params=p.params,
                         accuracy=p.accuracy, nearest_named=near, reference=bool(p.reference), digest=p.digest))
    return rows


# Workers (explorer/workers.py) ---------------------------------------------------------------------

def train_study(study, url: str, settings: Settings, device: str, data_dir: Path | None, jobs: int,
                heartbeat: tuple[int, int], console: Console, ctx: search.Context | None = None) -> None:
    """Train the study's trials here: in this process with a live view, or in `jobs` worker processes.

    `ctx`: the data and device already prepared (and checked) by the caller."""
    from . import workers
    if jobs > 1:
        code = workers.run_pool(study.study_name, url, jobs, device, data_dir, heartbeat, settings, console)
        _stopped(code, console)
        if code:
            raise SystemExit(code)  # the worker printed its error
    else:
        from .progress import SearchProgress
        ctx = ctx or search.prepare(settings, device, data_dir)
        done = len(search.completed(study))
        old = workers.install_signal_handlers()
        try:
            with SearchProgress(settings.trials, done, search.rejected_count(study), console) as progress:
                try:
                    search.run(study, ctx, progress)
                except KeyboardInterrupt:
                    _stopped(130, console)
                except workers.WorkerStopped:
                    _stopped(143, console)
        finally:
            workers.restore_signal_handlers(old)
    held = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if workers.claimed(t)]
    target = settings_of(study).trials
    if held and len(search.completed(study)) < target:
        console.print(f"[yellow]{len(search.completed(study))}/{target} trials done[/]: the rest are held by "
                      f"trial{'s' if len(held) > 1 else ''} {', '.join(map(str, held))}, still RUNNING in "
                      "other workers. A journal storage has no heartbeat: if those workers were killed, run "
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
    from . import workers
    from .study import _existing_default
    if grace <= heartbeat:
        raise UserError(f"--grace: {grace} s must be longer than --heartbeat ({heartbeat} s), "
                        "or live workers' trials would be failed")
    url = storage or _existing_default(study_name)
    study, settings = workers.join(study_name, url, (heartbeat, grace))
    if reclaim:
        numbers = workers.reclaim(study)
        console.print(f"--reclaim: {len(numbers)} running trial{'s' if len(numbers) != 1 else ''} failed and "
                      "enqueued again" + (f" ({', '.join(map(str, numbers))})" if numbers else ""), highlight=False)
    done = len(search.completed(study))
    console.print(f"joined study [bold]{study_name}[/] in {redact(url)}: space {settings.space}, "
                  f"budget {format_flops(settings.budget)} (multiply-adds), dataset {settings.dataset}, "
                  f"{done}/{settings.trials} trials done, {jobs} worker{'s' if jobs > 1 else ''} here",
                  highlight=False)
    if done < settings.trials:
        train_study(study, url, settings, device, data_dir, jobs, (heartbeat, grace), console)
    console.print(f"study {study_name}: {len(search.completed(study))}/{settings_of(study).trials} trials done",
                  highlight=False)
