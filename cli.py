"""explore: a design-space explorer for convolutional networks.

FLOPs are multiply-adds throughout (the fvcore / ResNet-paper convention).
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

# explorer.base is light; every other explorer module loads torch, so commands import them when they run
from explorer.base import files
from explorer.base.errors import UserError
from explorer.base.settings import (
    DATA,
    FLAGS,
    HEARTBEAT,
    PROXY,
    REFINE_MIN_TRIALS,
    RESOLUTIONS,
    SCORE_BATCH,
    SCORES,
    ProxySpec,
    Recipe,
    default_proxy_resolution,
)

try:  # typer 0.29+ carries its own copy of click as typer._click; earlier versions use click itself
    from typer._click import exceptions as clicks
    from typer._click.globals import get_current_context
except ImportError:
    from click import exceptions as clicks
    from click import get_current_context

# Off a terminal (a pipe, a file, CI logs) nothing is wrapped: a line stays one line, words stay whole.
out = Console(width=None if sys.stdout.isatty() else 1000, soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


def say_error(message: str) -> None:
    from rich.markup import escape
    err.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


class OneLineErrors(TyperGroup):
    """click's usage errors (a bad or missing flag, `--trials 0`) as the same one line and exit code 2 as
    every other error, instead of typer's usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except clicks.NoArgsIsHelpError as e:
            e.show()
            code = 2
        except clicks.BadParameter as e:
            param = e.param
            name = param.opts[0] if param is not None and getattr(param, "opts", None) else (e.param_hint or "argument")
            name = name.upper() if getattr(param, "param_type_name", "") == "argument" else name
            what = "is required" if isinstance(e, clicks.MissingParameter) else _own_words(e.message)
            say_error(f"{name}: {what}" + _range_of(param) + _help_hint(getattr(e, "ctx", None)))
            code = 2
        except clicks.ClickException as e:
            ctx = getattr(e, "ctx", None)
            say_error(e.format_message() + _help_hint(ctx))
            code = e.exit_code
        except typer.Abort:
            code = 130
        sys.exit(code if isinstance(code, int) else 0)


def _own_words(message: str) -> str:
    """A parameter-parsing complaint (typer words it through pydantic) in the project's words."""
    message = message.split(",")[0]
    for theirs, ours in (("Input should be", "must be"), ("a valid integer", "a whole number"), ("a valid ", "a "),
                         ("greater than or equal to", "at least"), ("less than or equal to", "at most")):
        message = message.replace(theirs, ours)
    return message


def _help_hint(ctx) -> str:
    return f" (see `explore {ctx.info_name} --help`)" if ctx is not None and ctx.parent is not None else ""


def _range_of(param) -> str:
    lo_hi = FLAG_RANGES.get(getattr(param, "name", None))
    return f" (valid: {lo_hi[0]:g} to {lo_hi[1]:g})" if lo_hi else ""


app = typer.Typer(help=__doc__, no_args_is_help=True, rich_markup_mode="markdown", cls=OneLineErrors,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            print(f"explore {version('explore')}")
        except PackageNotFoundError:
            print("explore (not installed: run from a source tree)")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="print the version and exit")) -> None:
    pass  # the app's help is the module docstring; this callback only carries --version


def open_option():
    """One spelling on every command that writes a page: --open / --no-open, not opening by default."""
    return typer.Option(False, "--open/--no-open", help="open the page in a browser")

# The valid range of every numeric flag, by parameter name, checked in one place (`check_flags`): each search
# flag's as explorer.base.settings.FLAGS declares it, then those of flags several commands share.
# Non-finite numbers (inf, nan) are refused for every flag.
FLAG_RANGES = {
    **{name: (flag.low, flag.high) for name, flag in FLAGS.items() if None not in (flag.low, flag.high)},
    "seed": (0, 2**32 - 1), "classes": (1, 100_000), "jobs": (1, 1024),
    "top": (0, 100_000), "random_": (0, 100_000), "epochs_multiplier": (1, 1000), "trial": (0, 2**31 - 1),
    "k": (1, 1000), "draws": (1, 10_000), "heartbeat": (1, 86_400), "grace": (1, 7 * 86_400),
    "threads": (1, 1024), "batch": (1, 4096), "jobs_per_gpu": (1, 1024), "min_trials": (5, 1_000_000),
}


def check_flags(values: dict) -> None:
    """Refuse a non-finite or out-of-range numeric flag in one line naming it."""
    ctx = get_current_context(silent=True)
    opts = {p.name: p.opts[0] for p in ctx.command.params} if ctx else {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        flag = opts.get(name, "--" + name.strip("_").replace("_", "-"))
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag}: {value} is not a finite number")
        lo, hi = FLAG_RANGES.get(name, (-2**63, 2**63 - 1))
        if not lo <= value <= hi:
            raise UserError(f"{flag}: {value} is out of range; use {lo:g} to {hi:g}")


def friendly(fn):
    """Turn every user-facing error into one line on stderr and exit code 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from explorer.commands import USER_ERRORS  # with the command: `explore --help` needs no torch
        try:
            check_flags(kwargs)
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            say_error(str(e))
            raise typer.Exit(2)
    return wrapper


def resolve_genotype(ref: str):
    """A registered name or a YAML/JSON file holding a genotype."""
    import space
    with located(ref):
        return space.load(ref)


@contextlib.contextmanager
def located(ref: str):
    """Errors about a genotype file, including shape errors found later, begin with the file's name."""
    import space
    try:
        yield
    except space.GenotypeError as e:
        if not Path(ref).exists() or e.path.startswith(ref):
            raise
        raise space.GenotypeError(f"{ref}: {e.path}" if e.path else ref, e.reason) from None


def gflops(flops: int) -> str:
    return f"{flops / 1e9:.3f}"


@app.command("list")
@friendly
def list_(pattern: Optional[str] = typer.Argument(None, help="shell-style wildcard on the name, e.g. 'res*' or "
                                                  "'*inception*' [default: all]"),
          family: Optional[str] = typer.Option(None, help="only this family, e.g. residual or dense "
                                               "(the family column)"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Named genotypes: family, parameters, FLOPs (multiply-adds), canonical resolution."""
    import space
    if family is not None and family not in space.families():
        raise UserError(f"--family: unknown family '{family}'; choose one of {', '.join(space.families())}")
    rows = [_list_row(name) for name in space.names(pattern, family)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Named genotypes (FLOPs are multiply-adds, batch 1)")
    for col in ("name", "family", "params", "res", "classes", "GFLOPs@224", "GFLOPs@res"):
        table.add_column(col, justify="left" if col in ("name", "family") else "right", no_wrap=True)
    for r in rows:
        at224 = "too small" if r["flops_at_224"] is None else gflops(r["flops_at_224"])  # Inception v3's aux: 299
        table.add_row(r["name"], r["family"] or "", f"{r['params']:,}", str(r["resolution"]), str(r["classes"]),
                      at224, gflops(r["flops"]))
    out.print(table)
    if not rows:
        err.print(f"no named genotype matches {pattern!r}" + (f" in family {family}" if family else ""),
                  highlight=False)


def _list_row(name: str) -> dict:
    import space
    g = space.named(name)
    own = space.complexity(g, breakdown=False)
    try:
        at224 = space.complexity(g, 224, breakdown=False).flops
    except space.GenotypeError:
        at224 = None
    return dict(name=name, family=g.family, params=own.params, resolution=g.resolution, classes=g.classes,
                flops=own.flops, flops_at_224=at224, flops_unit="multiply-adds")


@app.command()
@friendly
def show(genotype: str = typer.Argument(..., help="a named genotype or a YAML/JSON file"),
         resolution: Optional[int] = typer.Option(None, "--resolution", "-r",
                                                   help="input resolution [default: the genotype's own]"),
         classes: Optional[int] = typer.Option(None, help="number of classes [default: the genotype's own]"),
         as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """The genotype as YAML and a per-stage table of params and FLOPs (multiply-adds)."""
    import space
    g = resolve_genotype(genotype)
    with located(genotype):
        cx = space.complexity(g, resolution, classes)
    if as_json:
        print(json.dumps({
            "name": g.name, "family": g.family, "digest": space.digest(g),
            "params": cx.params, "flops": cx.flops, "flops_unit": "multiply-adds", "acts": cx.acts,
            "resolution": cx.resolution, "classes": classes or g.classes,
            "parts": [vars(p) for p in cx.parts], "genotype": space.dump(g)}, indent=2))
        return
    out.print(space.to_yaml(g), highlight=False, markup=False)
    table = Table(title=f"{g.name or genotype} at {cx.resolution}x{cx.resolution} "
                        f"({classes or g.classes} classes; FLOPs are multiply-adds)")
    for col in ("part", "blocks", "channels", "out size", "params", "MFLOPs", "share"):
        table.add_column(col, justify="left" if col == "part" else "right", no_wrap=True)
    for p in cx.parts:
        table.add_row(p.name, str(p.blocks or ""), str(p.channels) if p.name != "head" else "",
                      f"{p.size[0]}x{p.size[1]}" if p.name != "head" else "", f"{p.params:,}",
                      f"{p.flops / 1e6:,.1f}", f"{100 * p.flops / max(cx.flops, 1):.1f}%")
    table.add_row("total", str(sum(p.blocks for p in cx.parts)), "", "", f"{cx.params:,}",
                  f"{cx.flops / 1e6:,.1f}", "100%", style="bold")
    out.print(table)


@app.command()
@friendly
def latency(genotype: str = typer.Argument(..., help="a named genotype or a YAML/JSON file"),
            device: str = typer.Option("cpu", help="cpu, cuda, cuda:N, or auto (cuda where there is a GPU, as "
                                       "`explore search` means it)"),
            resolution: int = typer.Option(224, "--resolution", "-r", help="input resolution"),
            batch: int = typer.Option(1, help="images per forward pass"),
            threads: Optional[int] = typer.Option(None, help="CPU threads, on --device cpu "
                                                  "[default: torch's, one per core]"),
            no_measure: bool = typer.Option(False, "--no-measure", help="predict only; don't build and time it"),
            as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Predicted and measured latency (ms) of one forward pass, from this device's lookup table of op latencies.

    The first prediction on a device measures the ops it has not seen and fits the model (a minute or two);
    the table is cached in ~/.cache/explore/latency/."""
    from explorer.commands.latency import device_key, latency_report
    g = resolve_genotype(genotype)
    key, on = device_key(device, threads, batch)
    with located(genotype):
        report = latency_report(g, g.name or genotype, resolution, key, measured=not no_measure, on=on)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"{report['name']} at {resolution}x{resolution}, batch {batch}: slowest ops "
                        f"(of {len(report['ops'])} distinct)")
    for col in ("op", "kind", "runs", "ms each", "ms total"):
        table.add_column(col, justify="left" if col in ("op", "kind") else "right", overflow="ellipsis")
    for row in report["ops"][:12]:
        table.add_row(row["op"], row["kind"], str(row["count"]), f"{row['ms']:.3f}", f"{row['ms'] * row['count']:.2f}")
    out.print(table)
    measured = "not measured" if report["measured_ms"] is None else f"measured {report['measured_ms']:.2f} ms"
    out.print(f"{report['device']}\n{gflops(report['flops'])} GFLOPs (multiply-adds); "
              f"predicted {report['predicted_ms']:.2f} ms, {measured}", highlight=False)


@app.command()
@friendly
def graph(genotype: str = typer.Argument(..., help="a named genotype or a YAML/JSON file"),
          fmt: str = typer.Option("html", "--format", "-f",
                                  help="dot, graphml, json or html (an interactive plotly page)"),
          output: Optional[Path] = typer.Option(None, "--output", "-o", help="where to write [default: stdout; "
                                                "html: GENOTYPE-graph.html]"),
          resolution: Optional[int] = typer.Option(None, "--resolution", "-r",
                                                    help="input resolution [default: the genotype's own]"),
          classes: Optional[int] = typer.Option(None, help="number of classes [default: the genotype's own]"),
          open_: bool = open_option(),
          force: bool = typer.Option(False, "--force", help="replace the output file if it exists "
                                     "(never a study's storage)")) -> None:
    """The network as a graph of ops (networkx): each node with its shape, params and FLOPs (multiply-adds)."""
    import space
    from space.graph import FORMATS
    if fmt not in FORMATS:
        raise UserError(f"--format: '{fmt}' isn't one of {', '.join(FORMATS)}")
    g = resolve_genotype(genotype)
    with located(genotype):
        text = space.export_graph(space.to_graph(g, resolution, classes), fmt)
    if output is None and fmt == "html":
        output = Path(f"{g.name or Path(genotype).stem}-graph.html")
    if output is None:
        sys.stdout.write(text)
        return
    files.write(output, text, "-o", force)
    err.print(f"wrote {output}", highlight=False)
    if open_ and fmt == "html":
        _open_in_browser(output)


def panel(name: str, *args, **kwargs):
    """An option shown in the help panel `name`."""
    return typer.Option(*args, rich_help_panel=name, **kwargs)


def setting(name: str, *decls: str):
    """A search flag as explorer.base.settings.FLAGS declares it: its panel, help and default shown; its lower
    bound is enforced while parsing, its upper one by `check_flags`. Unset, the study's or the default applies."""
    flag = FLAGS[name]
    return panel(flag.panel, None, *decls, help=flag.text, min=flag.low)


STORAGE = "Storage and workers"
JOBS_PER_GPU_HELP = ("instead of --jobs on CUDA: this many workers on each visible GPU (or on cuda:N), e.g. 4 "
                     "for small proxies, which alone leave a GPU mostly idle (README: MPS)")


@app.command()
@friendly
def search(
    budget: Optional[str] = setting("budget"),
    max_params: Optional[str] = setting("max_params", "--max-params"),
    space_: Optional[str] = setting("space", "--space"),
    trials: Optional[int] = setting("trials"),
    sampler: Optional[str] = setting("sampler"),
    seed: Optional[int] = setting("seed"),
    epochs: Optional[int] = setting("epochs"),
    batch_size: Optional[int] = setting("batch_size", "--batch-size"),
    lr: Optional[float] = setting("lr"),
    resolution: Optional[int] = setting("resolution"),
    proxy_resolution: Optional[int] = setting("proxy_resolution", "--proxy-resolution"),
    proxy_width: Optional[float] = setting("proxy_width", "--proxy-width"),
    proxy_depth: Optional[int] = setting("proxy_depth", "--proxy-depth"),
    cudnn_benchmark: Optional[bool] = setting("cudnn_benchmark", "--cudnn-benchmark/--no-cudnn-benchmark"),
    dataset: Optional[str] = setting("dataset"),
    data_dir: Optional[Path] = panel(DATA, None, "--data-dir", help="dataset cache [default: ~/.cache/explore/data]"),
    train_images: Optional[int] = setting("train_images", "--train-images"),
    val_images: Optional[int] = setting("val_images", "--val-images"),
    study: Optional[str] = panel(STORAGE, None, help="study name [default: SPACE-BUDGET-DATASET]"),
    storage: Optional[str] = panel(STORAGE, None, help="any Optuna storage URL "
                                   "[default: sqlite:///studies/STUDY/study.db]"),
    no_run: bool = panel(STORAGE, False, "--no-run", help="create the study and its settings, train nothing"),
    jobs: int = panel(STORAGE, 1, "--jobs", "-j", min=1, help="worker processes training at once on this machine, "
                      "sharing the study through its storage (each gets cores/N CPU threads; on CUDA they are "
                      "spread round-robin over the visible GPUs)"),
    jobs_per_gpu: Optional[int] = panel(STORAGE, None, "--jobs-per-gpu", min=1, help=JOBS_PER_GPU_HELP),
    device: str = panel(STORAGE, "auto", help="auto, cpu, cuda or cuda:N"),
    prescreen: Optional[int] = setting("prescreen", "--prescreen"),
    prescreen_score: Optional[str] = setting("prescreen_score", "--prescreen-score"),
    prune: Optional[str] = setting("prune", "--prune"),
    prune_k: Optional[int] = setting("prune_k", "--prune-k"),
    stochastic_depth: Optional[float] = setting("stochastic_depth", "--stochastic-depth"),
    rungs: Optional[str] = setting("rungs"),
    objective: Optional[str] = setting("objective"),
) -> None:
    """Search a design space under a FLOP or latency budget: Optuna draws genotypes, proxies train, a Pareto front
    emerges.

    Rerunning the same command resumes the study; settings that change what a trial means
    (space, budget, dataset, resolution, proxy, recipe, pre-screening, stochastic depth, rungs) can't change on resume.
    From Python, on your own arrays: explorer.search (README "From Python").
    """
    import explorer
    try:
        explorer.search(budget, space_, dataset, trials=trials, study=study, storage=storage, device=device,
                        progress=out, jobs=jobs, data_dir=data_dir, no_run=no_run, max_params=max_params,
                        train_images=train_images, val_images=val_images, epochs=epochs, batch_size=batch_size,
                        lr=lr, resolution=resolution, proxy_resolution=proxy_resolution, proxy_width=proxy_width,
                        proxy_depth=proxy_depth, sampler=sampler, seed=seed, prescreen=prescreen,
                        prescreen_score=prescreen_score, prune=prune, prune_k=prune_k,
                        stochastic_depth=stochastic_depth, rungs=rungs, objective=objective,
                        cudnn_benchmark=cudnn_benchmark, jobs_per_gpu=jobs_per_gpu)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # the study is resumable, and the search has said so


def _device(name: str):
    from explorer.trial.trainer import resolve_device
    try:
        return resolve_device(name)
    except ValueError as e:
        raise UserError(f"--device: {e}") from None


def _num(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"


def _score_settings(study: str | None, storage: str | None, dataset: str | None, data_dir: Path | None) -> dict:
    """The proxy `explore score` adapts a genotype to: the study's, else search's default."""
    if study:
        from explorer.studies.store import load_study, settings_of
        s = settings_of(load_study(study, storage))
        if dataset and dataset != s.dataset:
            raise UserError(f"--dataset: study '{study}' uses {s.dataset}; drop --dataset or --study")
        return dict(dataset=s.dataset, resolution=s.proxy_resolution, width=s.proxy_width, depth=s.proxy_depth,
                    seed=s.seed)
    from explorer.commands import runner
    name = runner.with_dataset({"dataset": dataset} if dataset else {}, data_dir, err)["dataset"]
    return dict(dataset=name, resolution=default_proxy_resolution(name), width=PROXY.width, depth=PROXY.depth, seed=0)


@app.command()
@friendly
def score(genotype: str = typer.Argument(..., help="a named genotype or a YAML/JSON file"),
          dataset: Optional[str] = typer.Option(None, help="fashion-mnist, digits, cifar10, mnist or "
                                                "imagefolder:PATH [default: the study's, else fashion-mnist when it "
                                                "can be had, else digits]"),
          batch_size: int = typer.Option(SCORE_BATCH, "--batch-size", min=2, help="images in the scoring minibatch"),
          study: Optional[str] = typer.Option(None, help="adapt the proxy with this study's settings "
                                              "[default: search's default proxy settings]"),
          storage: Optional[str] = typer.Option(None, help="Optuna storage URL of --study"),
          scores: Optional[str] = typer.Option(None, "--scores", help="comma-separated subset of synflow, naswot, "
                                               "snip, grad_norm, params [default: all]"),
          seed: Optional[int] = typer.Option(None, help="initialisation and minibatch seed "
                                             "[default: the study's, else 0]"),
          device: str = typer.Option("cpu", help="cpu, cuda or auto"),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="dataset cache"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Zero-cost scores of an untrained proxy: synflow, NASWOT, snip, grad_norm and params (higher is better).

    The genotype is adapted to the dataset like in search; the scores need one minibatch and no training.
    """
    import space
    from explorer.trial import data as datasets
    from explorer.trial import scores as zero_cost
    from explorer.trial.proxy import make_proxy
    g = resolve_genotype(genotype)
    conf = _score_settings(study, storage, dataset, data_dir)
    seed = conf["seed"] if seed is None else seed
    names = tuple(n.strip() for n in scores.split(",")) if scores else SCORES
    for n in names:
        if n not in SCORES:
            raise UserError(f"--scores: unknown score '{n}'; choose from {', '.join(SCORES)}")
    dev = _device(device)
    data = datasets.load(conf["dataset"], resolution=conf["resolution"], data_dir=data_dir, seed=seed)
    with located(genotype):
        proxy = make_proxy(g, conf["resolution"], conf["width"], conf["depth"], data.in_channels, data.num_classes)
        pcx = space.complexity(proxy, breakdown=False, in_channels=data.in_channels)
        values = zero_cost.score_proxy(proxy, data, names, batch_size, seed, dev)
    if as_json:
        print(json.dumps({"genotype": g.name or genotype, "digest": space.digest(g), "dataset": conf["dataset"],
                          "batch_size": batch_size, "seed": seed, "device": str(dev),
                          "proxy": {"resolution": conf["resolution"], "width": conf["width"], "depth": conf["depth"],
                                    "params": pcx.params, "flops": pcx.flops},
                          "scores": {k: zero_cost.clean(v) for k, v in values.items()}}, indent=2))
        return
    shape = ProxySpec(conf["resolution"], conf["width"], conf["depth"]).describe(training=False)
    out.print(f"{g.name or genotype}'s proxy on {conf['dataset']}: {shape}, {pcx.params:,} params; one minibatch "
              f"of {batch_size}, seed {seed}, untrained; higher scores are better", highlight=False)
    table = Table(title="zero-cost scores")
    table.add_column("score", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for k, v in values.items():
        table.add_row(k, f"{v:,.0f}" if k == "params" else f"{v:.6g}")
    out.print(table)


@app.command()
@friendly
def fidelity(study: str = typer.Argument(..., help="the study whose ranking to check"),
             storage: Optional[str] = typer.Option(None, help="Optuna storage URL [default: the study's SQLite file]"),
             top: int = typer.Option(5, min=0, help="retrain the TOP most accurate completed trials"),
             random_: int = typer.Option(5, "--random", min=0, help="and this many other completed trials at random"),
             epochs_multiplier: Optional[int] = typer.Option(None, "--epochs-multiplier", min=1,
                                                             help="the reference's epochs: the proxy's times this "
                                                             "[default: 4]"),
             seed: int = typer.Option(0, help="seed of the random pick"),
             device: str = typer.Option("auto", help="auto, cpu or cuda"),
             data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="dataset cache"),
             as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Proxy fidelity: retrain a sample of trials with the reference; Kendall tau, Spearman rho and top-k metrics.

    The reference is the same proxy trained longer (explorer/analysis/fidelity.py, as in benchmarks/fidelity.py):
    4x the epochs on 3x the training images. Zero-cost scores of the same genotypes are ranked against it
    too. The top-k metrics (tau within the reference's best half, precision@k, BR@5, regret) come with
    bootstrap 95% intervals over the retrained trials. The result is stored in the study (user attr
    explore:fidelity) for the report.
    """
    from explorer.analysis import fidelity as fid
    from explorer.studies.store import load_study, settings_of
    st = load_study(study, storage)
    settings = settings_of(st)
    dev = _device(device)

    def progress(i, n, row):
        if not as_json:
            err.print(f"retrained {i}/{n}: trial {row.number} ({row.picked}, {row.family}): proxy "
                      f"{row.proxy_accuracy:.4f} -> {_num(row.long_accuracy)} in {row.wall_time:.1f}s", highlight=False)

    record = fid.run(st, settings, top, random_, epochs_multiplier, seed, str(dev), data_dir, progress)
    if as_json:
        print(json.dumps(record.to_dict(), indent=2))
        return
    trials = Table(title=f"{study}: proxy ({record.proxy.describe()}) against the reference "
                         f"({record.reference.describe()}), validation accuracy on {record.dataset}, {record.device}; "
                         "GFLOPs are multiply-adds")
    for col in ("trial", "picked", "family", "GFLOPs", "proxy acc", "long acc", "long test acc"):
        trials.add_column(col, justify="left" if col in ("picked", "family") else "right", no_wrap=True)
    for r in record.trials:
        trials.add_row(str(r.number), r.picked, r.family, f"{r.flops / 1e9:.3f}", f"{r.proxy_accuracy:.4f}",
                       _num(r.long_accuracy), _num(r.long_test_accuracy))
    out.print(trials)
    corr = Table(title="rank agreement with the longer-trained accuracy")
    for col in ("ranked by", "n", "Kendall tau", "p", "Spearman rho", "p"):
        corr.add_column(col, justify="left" if col == "ranked by" else "right", no_wrap=True)
    for name, c in record.correlations.items():
        corr.add_row(name, str(c["n"]), _num(c["kendall_tau"], 3), _num(c["kendall_p"], 3),
                     _num(c["spearman_rho"], 3), _num(c["spearman_p"], 3), style="bold" if name == fid.PROXY else None)
    out.print(corr)
    _print_top_k(record, bold=fid.PROXY)
    out.print(f"stored in study '{study}' as user attr {fid.FIDELITY_KEY}", highlight=False)


def _print_top_k(record, bold: str) -> None:
    """What the overall tau hides: whether each ranking's best are the longer training's best (`bold`: the
    proxy's row)."""
    from explorer.analysis import topk
    names = topk.telling(len(record.trials))
    table = Table(title="the top of each ranking against the longer training (the reference), with bootstrap 95% "
                        "intervals over the retrained trials", caption=topk.legend(names))
    for col in ("ranked by", *names):
        table.add_column(col, justify="left" if col == "ranked by" else "right", no_wrap=True)
    for name, metrics in record.top_k.items():
        table.add_row(name, *(topk.shown(metrics[m]) for m in names), style="bold" if name == bold else None)
    out.print(table)


@app.command()
@friendly
def lesion(ref: str = typer.Argument(..., help="a study (with --trial N), or a named genotype / file (with --study)"),
           trial: Optional[int] = typer.Option(None, "--trial", min=0, help="the trial of study REF to lesion"),
           study: Optional[str] = typer.Option(None, help="the study whose proxy settings and recipe train "
                                               "genotype REF"),
           storage: Optional[str] = typer.Option(None, help="Optuna storage URL [default: the study's SQLite file]"),
           compare: Optional[str] = typer.Option(None, help="another trial number of the study, or a named genotype / "
                                                 "file, lesioned alongside in the same plot"),
           k: Optional[int] = typer.Option(None, "--k", min=1, help="also plot accuracy against 0..K blocks "
                                           "deleted at random"),
           draws: int = typer.Option(10, min=1, help="random draws per k"),
           seed: int = typer.Option(0, help="seed of the random deletions"),
           retrain: bool = typer.Option(False, "--retrain", help="train again even if weights are stored"),
           device: str = typer.Option("auto", help="auto, cpu or cuda"),
           data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="dataset cache")) -> None:
    """Lesion study: delete each residual block of a trained proxy at test time (Veit et al. 2016).

    A deleted residual block passes its input through its shortcut (exactly the input for an identity
    shortcut); plain and dense blocks can't be deleted. The proxy is trained with the study's recipe
    (weights kept in studies/STUDY/weights/); the plot goes to studies/STUDY/lesion-N.html.
    """
    from explorer.analysis import lesion as les
    dev = _device(device)
    path, subjects = les.run(ref, trial, study, storage, compare, k, draws, seed, str(dev), data_dir, retrain,
                             resolve_genotype, err)
    for s in subjects:
        table = Table(title=f"{s.label}: test accuracy {s.baseline:.4f} with every block")
        for col in ("block", "name", "kind", "accuracy deleted", "drop"):
            table.add_column(col, justify="left" if col in ("name", "kind") else "right", no_wrap=True)
        for b in s.blocks:
            table.add_row(str(b["position"]), b["name"], b["kind"],
                          f"{b['accuracy']:.4f}" if b["deletable"] else "not deletable",
                          f"{b['drop']:+.4f}" if b["deletable"] else "")
        out.print(table)
        if s.random:
            ks = sorted({r["k"] for r in s.random})
            by_k = {kk: [r["accuracy"] for r in s.random if r["k"] == kk] for kk in ks}
            means = ", ".join(f"k={kk}: {sum(accs) / len(accs):.3f}" for kk, accs in by_k.items())
            out.print(f"{s.label}, mean accuracy with k blocks deleted at random: {means}", highlight=False)
    out.print(f"plot: {path}", highlight=False)


@app.command()
@friendly
def worker(
    study: str = typer.Option(..., help="the study to join (made by `explore search`, e.g. with --no-run)"),
    storage: Optional[str] = typer.Option(None, help="its storage: sqlite:///PATH, "
                                          "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB or journal:PATH "
                                          "[default: sqlite:///studies/STUDY/study.db]"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="worker processes on this machine (on CUDA spread "
                             "round-robin over the visible GPUs)"),
    jobs_per_gpu: Optional[int] = typer.Option(None, "--jobs-per-gpu", min=1, help=JOBS_PER_GPU_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="dataset cache [default: ~/.cache/explore/data]"),
    heartbeat: int = typer.Option(HEARTBEAT[0], min=1, help="seconds between heartbeats of a running trial "
                                   "(database storages)"),
    grace: int = typer.Option(HEARTBEAT[1], min=1, help="seconds without a heartbeat after which a trial is failed and "
                              "retried once by another worker"),
    reclaim: bool = typer.Option(False, "--reclaim", help="first fail the study's RUNNING trials and retry each once: "
                                 "for trials of killed workers on journal storage; only when no worker is running"),
) -> None:
    """Join a study and train its trials until it holds its target; settings come from the study.

    Start as many as you like, on as many machines as share the storage: each trial is claimed by one
    worker, a killed worker's trial is failed after --grace seconds and retried once, SIGTERM releases
    the running trial (exit 143), and the study ends with exactly its target of completed trials.
    """
    from explorer.commands import pool, runner
    runner.worker_command(study, storage, pool.jobs_for(jobs, jobs_per_gpu, device), device, data_dir,
                          heartbeat, grace, reclaim, out)


@app.command()
@friendly
def plot(study: str = typer.Argument(..., help="the study to plot"),
         storage: Optional[str] = typer.Option(None, help="Optuna storage URL [default: the study's SQLite file]"),
         x: Optional[str] = typer.Option(None, "--x", help="x axis: flops (multiply-adds), params, or latency where "
                                         "the study predicts it; the page has buttons to switch [default: the "
                                         "study's second objective]"),
         open_: bool = open_option(),
         png: Optional[Path] = typer.Option(None, "--png", help="also write the plot as a PNG image (needs the "
                                            "[png] extra, kaleido, and Chrome or Chromium)"),
         force: bool = typer.Option(False, "--force", help="replace the --png file if it exists "
                                    "(never a study's storage)")) -> None:
    """The Pareto plot, proxy accuracy against the study's cost (FLOPs are multiply-adds), as
    studies/STUDY/pareto.html (offline)."""
    from explorer.analysis import report, summary
    from explorer.analysis.pareto import axes_of
    _, settings, pts = report.open_results(study, storage)
    x = x or summary.front_axis(pts, settings)
    if x not in axes_of(pts):
        raise UserError(f"--x: unknown axis '{x}' for this study; choose {' or '.join(axes_of(pts))}")
    path = report.write_pareto_plot(study, settings, pts, x, png, force)
    out.print(f"plot: {path} ({len(pts)} completed trials)", highlight=False, soft_wrap=True)
    if png is not None:
        out.print(f"image: {png}", highlight=False, soft_wrap=True)
    if open_:
        _open_in_browser(path)


def _open_in_browser(path: Path) -> None:
    import os
    import webbrowser
    uri = path.resolve().as_uri()
    graphical = sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not (graphical and webbrowser.open(uri)):  # never start a text-mode browser in the terminal
        out.print(f"open {uri} in a browser", highlight=False, soft_wrap=True)


@app.command()
@friendly
def report(study: str = typer.Argument(..., help="the study to report on"),
           storage: Optional[str] = typer.Option(None, help="Optuna storage URL [default: the study's SQLite file]"),
           by: Optional[list[str]] = typer.Option(None, "--by", help="group error EDFs by this genotype field "
                                                  "(repeatable): family, residual, highway, dense, separable, preact, "
                                                  "depth, width, any top-level field or a path [default: family]"),
           open_: bool = open_option()) -> None:
    """One self-contained HTML page for the whole study, as studies/STUDY/report.html.

    Settings, the Pareto plot and table (with diffs from the nearest named architectures), hypervolume
    over trials, error EDFs, the design axes that matter (as `explore axes`), a timeline of trials with failures
    and rejections, and network graphs.
    """
    from explorer.analysis import report as rep
    path = rep.write_report(study, storage, by or ["family"])
    out.print(f"report: {path}", highlight=False, soft_wrap=True)
    if open_:
        _open_in_browser(path)


@app.command()
@friendly
def pareto(study: str = typer.Argument(..., help="the study"),
           storage: Optional[str] = typer.Option(None, help="Optuna storage URL [default: the study's SQLite file]"),
           as_json: bool = typer.Option(False, "--json", help="the rows as JSON (FLOPs are multiply-adds)"),
           as_csv: bool = typer.Option(False, "--csv", help="the rows as CSV (FLOPs are multiply-adds)")) -> None:
    """The Pareto set as a table: FLOPs (multiply-adds), params, proxy accuracy, nearest named architecture."""
    from explorer.analysis import report, summary
    from explorer.commands import runner
    if as_json and as_csv:
        raise UserError("--json and --csv: pick one")
    st, settings, pts = report.open_results(study, storage)
    if not (as_json or as_csv):
        runner.report(st, settings, out, plot=False, pts=pts)
        return
    rows = [row.as_dict() for row in summary.summarise(st, settings, pts).front]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    import csv
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["rank"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "tied_with": " ".join(map(str, r["tied_with"]))} for r in rows)


@app.command()
@friendly
def edf(study: str = typer.Argument(..., help="the study"),
        by: Optional[list[str]] = typer.Option(None, "--by", help="genotype field to group by (repeatable): family, "
                                               "residual, highway, dense, separable, preact, depth, width, any "
                                               "top-level field or a path such as stages[2].blocks[0].repeat "
                                               "[default: family]"),
        flop_normalised: bool = typer.Option(False, "--flop-normalised", help="reweight every group to the same "
                                             "log-FLOPs distribution (NDS's normalised EDF)"),
        storage: Optional[str] = typer.Option(None, help="Optuna storage URL [default: the study's SQLite file]"),
        open_: bool = open_option()) -> None:
    """Error EDFs of the study's trials by a genotype field (NDS, Radosavovic et al. 2019): studies/STUDY/edf.html.

    Prints n, min and mean error per group and the Kolmogorov-Smirnov statistic between groups.
    """
    from explorer.analysis import report
    path, results = report.write_edf(study, storage, by or ["family"], flop_normalised)
    for field, groups, pairs in results:
        out.print(f"error (1 - proxy accuracy) by {field}" + (", FLOP-normalised" if flop_normalised else ""),
                  highlight=False, soft_wrap=True)
        table = Table()
        for col in ("group", "n", "min", "mean"):
            table.add_column(col, justify="left" if col == "group" else "right", no_wrap=True)
        for g in groups:
            table.add_row(g.label, str(g.n), f"{g.min:.4f}", f"{g.mean:.4f}")
        out.print(table)
        if pairs:
            out.print("Kolmogorov-Smirnov statistic between groups", highlight=False)
            ks = Table()
            for col in ("group", "group", "D", "p"):
                ks.add_column(col, justify="left" if col == "group" else "right", no_wrap=True)
            for a, b, d, p in pairs:
                ks.add_row(a, b, f"{d:.3f}", "" if p is None else f"{p:.3g}")
            out.print(ks)
    out.print(f"EDFs: {path}", highlight=False, soft_wrap=True)
    if open_:
        _open_in_browser(path)


def _refinement_options():
    """The options `explore axes` and `explore refine` share."""
    return dict(
        storage=typer.Option(None, help="Optuna storage URL [default: the study's SQLite file]"),
        seed=typer.Option(0, help="seed of the bootstrap: equal seeds, equal results"),
        raw=typer.Option(False, "--raw-error", help="rank trials by their plain error, not relative to trials of "
                         "like FLOPs, and compare unweighted EDFs"),
        min_trials=typer.Option(REFINE_MIN_TRIALS, "--min-trials", help="completed drawn trials the study needs"))


_REFINING = _refinement_options()


@app.command()
@friendly
def axes(study: str = typer.Argument(..., help="the study"), storage: Optional[str] = _REFINING["storage"],
         seed: int = _REFINING["seed"], raw: bool = _REFINING["raw"], min_trials: int = _REFINING["min_trials"],
         as_json: bool = typer.Option(False, "--json", help="the findings as JSON")) -> None:
    """Which design axes matter: importance, bootstrap good range and error EDFs, per axis and space parameter.

    Per design axis (family, depth, width, cardinality, growth, kernels, separable, residual) and per
    parameter of the study's space: PED-ANOVA's importance, pycls's bootstrap good range (95%) and the KS
    statistic between the error EDFs inside and outside it, complexity-normalised as in NDS.
    """
    from explorer.commands.refinement import axes_command
    axes_command(study, storage, seed, raw, min_trials, as_json, out)


@app.command()
@friendly
def refine(study: str = typer.Argument(..., help="the study whose space to narrow"),
           output: Path = typer.Option(..., "--output", "-o", help="the refined space's YAML file"),
           storage: Optional[str] = _REFINING["storage"], seed: int = _REFINING["seed"],
           raw: bool = _REFINING["raw"], min_trials: int = _REFINING["min_trials"],
           force: bool = typer.Option(False, "--force", help="replace the output file if it exists")) -> None:
    """Write a narrower space: ranges cut to their bootstrap good range, never-good options dropped.

    The file is in the space grammar, a valid `--space`; a comment line explains each narrowing.
    """
    from explorer.commands.refinement import refine_command
    refine_command(study, output, storage, seed, raw, min_trials, force, out)


@app.command()
@friendly
def compare(studies: list[str] = typer.Argument(..., help="two or more studies; the first is the baseline"),
            storage: Optional[str] = typer.Option(None, help="Optuna storage URL [default: each study's SQLite "
                                                  "file]"),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="the page [default: "
                                                  "studies/FIRST/compare.html]"),
            force: bool = typer.Option(False, "--force", help="replace the -o file if it exists"),
            open_: bool = open_option()) -> None:
    """Which space is better: FLOP-normalised error EDFs overlaid (NDS), KS statistic, p-value and a verdict.

    The studies may have been drawn from different spaces; each is compared with the first.
    """
    from explorer.commands.refinement import compare_command
    path = compare_command(studies, storage, output, force, out)
    if open_:
        _open_in_browser(path)


@app.command()
@friendly
def export(ref: str = typer.Argument(..., help="a named genotype or a YAML/JSON file; or a study, with --trial N"),
           format_: str = typer.Option(..., "--format", "-f", help="yaml or json (the genotype), onnx or torchscript "
                                       "(the network)"),
           output: Path = typer.Option(..., "--output", "-o", help="file to write"),
           trial: Optional[int] = typer.Option(None, "--trial", min=0, help="the trial of study REF "
                                               "(see `explore pareto`)"),
           resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=RESOLUTIONS[0],
                                                    help="input resolution [default: the genotype's own; a trial: "
                                                    "the study's]"),
           classes: Optional[int] = typer.Option(None, min=1, help="number of classes [default: the genotype's own, "
                                                 "or what --weights was trained with; a trial: 1000]"),
           in_channels: Optional[int] = typer.Option(None, "--in-channels", min=1, help="input channels [default: 3, "
                                                     "or what --weights was trained with]"),
           weights: Optional[Path] = typer.Option(None, "--weights", help="trained weights from `explore train "
                                                  "GENOTYPE -o FILE`, embedded in the ONNX/TorchScript file "
                                                  "[default: freshly initialised]"),
           storage: Optional[str] = typer.Option(None, help="Optuna storage URL of study REF [default: its SQLite "
                                                 "file]"),
           force: bool = typer.Option(False, "--force", help="replace the output file if it exists "
                                      "(never a study's storage)")) -> None:
    """A genotype as YAML or JSON, or its network as ONNX or TorchScript (trained, with --weights).

    `explore export xception -f onnx -o x.onnx` exports a named genotype at its own resolution (299);
    `explore export STUDY --trial 7 -f onnx -o t7.onnx` a trial's network as the budget priced it.
    """
    from explorer.analysis import export as exp
    from explorer.studies.store import load_study, study_dir
    if trial is not None:
        target = exp.trial_target(load_study(ref, storage), trial, resolution, classes, in_channels, weights)
    else:
        if not Path(ref).exists() and (study_dir(ref) / "study.db").exists():
            raise UserError(f"'{ref}' is a study: add --trial N to export one of its trials")
        g = resolve_genotype(ref)
        target = exp.genotype_target(g, g.name or Path(ref).stem, resolution, classes, in_channels, weights)
    out.print(exp.export(target, format_, output, force), highlight=False, soft_wrap=True)


@app.command()
@friendly
def train(genotype: str = typer.Argument(..., help="a named genotype (see `explore list`) or a YAML/JSON file"),
          study: Optional[str] = typer.Option(None, help="the study whose proxy settings and recipe train it, and "
                                              "that stores it as a reference point"),
          output: Optional[Path] = typer.Option(None, "--output", "-o", help="outside a study: train the genotype "
                                                "itself and save its state_dict here (loads strictly into "
                                                "space.build; `explore export --weights` embeds it)"),
          dataset: Optional[str] = typer.Option(None, help="with -o: fashion-mnist, digits, cifar10, mnist or "
                                                "imagefolder:PATH [default: search's default dataset]"),
          epochs: Optional[int] = typer.Option(None, min=1, help="with -o [default: search's default]"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="with -o [default: search's "
                                                   "default]"),
          lr: Optional[float] = typer.Option(None, min=0, help="with -o: peak learning rate for a batch of 128 "
                                             "[default: search's default]"),
          resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=RESOLUTIONS[0],
                                                   help="with -o: input resolution [default: the dataset's proxy "
                                                   "resolution]"),
          seed: int = typer.Option(0, help="with -o: initialisation, data order and augmentation seed"),
          storage: Optional[str] = typer.Option(None, help="Optuna storage URL [default: the study's SQLite file]"),
          force: bool = typer.Option(False, "--force", help="train it again even if the study already has it; "
                                     "with -o, replace the weights file (never a study's storage)"),
          device: str = typer.Option("auto", help="auto, cpu or cuda"),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="dataset cache")) -> None:
    """Train a genotype: into a study as a labelled reference point (--study), or on its own into a weights
    file (-o).

    With --study, the genotype's proxy trains with the study's recipe and is stored as a trial with user attr
    `reference=NAME`: a labelled star on the plots, a row in the report. With -o, the genotype itself trains
    (full width and depth) on --dataset with search's recipe, and its weights are saved; each finished epoch
    is kept in FILE.ckpt, so the same command after an interruption resumes where it stopped.
    """
    g = resolve_genotype(genotype)
    name = g.name or Path(genotype).stem
    if (study is None) == (output is None):
        raise UserError("train: give --study STUDY (a reference point in a study) or -o FILE (weights, no study)")
    standalone = dict(dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr, resolution=resolution)
    if study is not None:
        given = [k for k, v in standalone.items() if v is not None]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')}: with --study the study's settings train it; drop it")
        _train_reference(study, storage, name, g, device, data_dir, force)
    else:
        _train_weights(name, g, output, standalone, seed, device, data_dir, force)


def _train_reference(study: str, storage, name: str, g, device: str, data_dir, force: bool) -> None:
    from explorer.base.budget import format_flops
    from explorer.commands import reference
    from explorer.studies.store import load_study
    st = load_study(study, storage)
    done = reference.train_reference(st, name, g, device, data_dir, force)
    if done.existing:
        out.print(f"{name} is already in study '{study}' as trial {done.number} (accuracy {done.accuracy:.4f}); "
                  "--force trains it again", highlight=False, soft_wrap=True)
        return
    where = ("in the study's space: stored with its parameters" if done.in_space else
             "not in the study's space: stored without parameters (NSGA-II/III then draw later trials at random)")
    over = ", over the study's budget" if done.over_budget else ""
    out.print(f"{name}: trial {done.number}, accuracy {done.accuracy:.4f}, {format_flops(done.flops)} (multiply-adds)"
              f", {done.params:,} params{over}; {where}", highlight=False, soft_wrap=True)


def _train_weights(name: str, g, output: Path, given: dict, seed: int, device: str, data_dir, force: bool) -> None:
    import torch

    from explorer.commands import runner
    from explorer.trial import weights as W
    files.check_target(output, force, "-o")  # before the training, not after it
    dataset = runner.with_dataset({k: v for k, v in given.items() if v is not None}, data_dir, err)["dataset"]
    resolution = given["resolution"] or default_proxy_resolution(dataset)
    try:
        recipe = Recipe(epochs=given["epochs"] or Recipe.epochs, batch_size=given["batch_size"] or Recipe.batch_size,
                        lr=Recipe.lr if given["lr"] is None else given["lr"], seed=seed)
    except ValueError as e:
        raise UserError(f"recipe: {e}") from None
    _device(device)

    checkpoint = output.with_name(output.name + ".ckpt")  # written from the first epoch on, beside the weights
    files.make_parent(output, "-o")
    resuming = checkpoint.exists()  # said at the first epoch, once the checkpoint proved to be this run's

    def on_epoch(epoch: int, accuracy: float) -> None:
        nonlocal resuming
        if resuming and epoch > 1:
            err.print(f"resumed from {checkpoint} after epoch {epoch - 1}, where an interrupted run stopped",
                      highlight=False)
        resuming = False
        err.print(f"epoch {epoch}/{recipe.epochs}: validation accuracy {accuracy:.4f}", highlight=False)

    model, meta, result = W.train_genotype(g, dataset, recipe, resolution, device, data_dir, on_epoch, checkpoint)
    files.write(output, lambda tmp: torch.save(W.state_with_meta(model, meta), tmp), "-o", force)
    checkpoint.unlink(missing_ok=True)
    out.print(f"{name}: trained on {dataset} at {resolution}px for {recipe.epochs} epoch(s), validation accuracy "
              f"{result.val_accuracy:.4f}; weights in {output} (load with space.build(GENOTYPE, {meta.classes}, "
              f"{meta.in_channels}), or embed with `explore export {name} --weights {output} -f onnx -o ...`)",
              highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
