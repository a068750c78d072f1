"""One candidate network, from a genotype to a trained proxy: what it costs deployed, whether the
study may train it, the proxy that trains, the seed it trains from and the record it leaves.

Search (explorer.sweep.objective), pre-screening (explorer.sweep.prescreen), `explore train`
(explorer.commands.reference), `explore fidelity` and lesions all come through here, so a
genotype is priced, adapted and seeded the same way wherever it trains.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

import space
from space.axes import design_axes
from space.named import named, names

from ..base.budget import format_flops, format_ms
from ..base.cpus import allowed_cpus
from ..base.errors import UserError
from ..base.settings import Recipe, Settings
from . import data as datasets
from . import latency
from .device import device_settings
from .proxy import make_proxy
from .trainer import resolve_device

DEPLOY_CLASSES = 1000  # the budget prices the network as deployed: ImageNet's head


def price(g: space.Genotype, resolution: int) -> space.Complexity:
    """The deployed network's FLOPs (multiply-adds) and params; GenotypeError if it can't exist there."""
    return space.complexity(g, resolution, DEPLOY_CLASSES, breakdown=False)


def over_limits(g: space.Genotype, cx: space.Complexity, settings: Settings) -> str | None:
    """Why the study may not train a network of this cost, or None."""
    if settings.budget and cx.flops > settings.budget:
        return f"over budget: {format_flops(cx.flops)} > {format_flops(settings.budget)}"
    if settings.latency_budget and (ms := latency_ms(g, settings)) > settings.latency_budget:
        return f"over the latency budget: {format_ms(ms)} > {format_ms(settings.latency_budget)} (predicted)"
    if settings.max_params and cx.params > settings.max_params:
        return f"over the parameter cap: {cx.params:,} > {settings.max_params:,}"
    return None


# Latency, predicted from the study's device's lookup table (explorer.trial.latency) ---------------------

_TABLES: dict[latency.DeviceKey, latency.Table] = {}
_PREDICTED: dict[tuple, float] = {}


def deploy_key(device: str) -> latency.DeviceKey:
    """The latency table's key a study's budget is priced on: the device (`cuda:N`: GPU N's name and the
    host CPU's), on CPU every core the process may use (as the deployed network would), float32, batch 1."""
    return latency.key_here(str(resolve_device(device)), len(allowed_cpus()))


def latency_table(settings: Settings, on: torch.device | None = None) -> latency.Table:
    """The study's table; its new ops are timed on `on`, the device this process trains on, given once
    (by `prepare`), else on the key's kind (GPU 0 on CUDA)."""
    key = settings.latency_device
    if on is not None and (key not in _TABLES or _TABLES[key].on != on):
        _TABLES[key] = latency.Table(key, on=on)
    return _TABLES.setdefault(key, latency.Table(key))


def latency_ms(g: space.Genotype, settings: Settings) -> float:
    """The deployed network's predicted latency on the study's device (ops new to its table are measured)."""
    table = latency_table(settings)
    memo = (space.digest(g), settings.resolution, table.key)
    if memo not in _PREDICTED:
        _PREDICTED[memo] = latency.predict(g, settings.resolution, table).ms
    return _PREDICTED[memo]


def fit_latency_model(settings: Settings, device: str) -> bool:
    """Fit the study's latency model here and now if its device's table has no fit yet; whether it did.
    Run before `--jobs N` starts its workers, which would otherwise each fit it at once, under one
    another's load: N times the work, and timings that say more about the load than the device."""
    if not settings.latency_device:
        return False
    check_latency_device(settings, device)  # never measure into another device's table
    table = latency_table(settings, resolve_device(device))
    if table.overhead:
        return False
    latency.calibrate(table)
    return True


def check_latency_device(settings: Settings, device: str) -> None:
    """A study priced in latency resumes only on the device (and torch, threads) its table was measured on."""
    if not settings.latency_device:
        return
    stored, here = settings.latency_device, deploy_key(device)
    if stored != here:
        raise UserError(f"--device: this study's latencies were predicted for {stored.short()}; this is "
                        f"{here.short()}, whose latencies don't compare: resume it there, or start another --study")


def second_objective(g: space.Genotype, cx: space.Complexity, settings: Settings) -> float:
    """What the study minimises beside accuracy: FLOPs (multiply-adds), params or predicted latency (ms)."""
    if settings.objective == "latency":
        return latency_ms(g, settings)
    return cx.params if settings.objective == "params" else cx.flops


def proxy_of(g: space.Genotype, settings: Settings, data: datasets.Splits) -> tuple[space.Genotype, space.Complexity]:
    """The proxy the study trains for a genotype, and its complexity; GenotypeError if none fits."""
    proxy = make_proxy(g, settings.proxy_resolution, settings.proxy_width, settings.proxy_depth,
                       data.in_channels, data.num_classes)
    return proxy, space.complexity(proxy, breakdown=False, in_channels=data.in_channels)


def trial_seed(seed: int, number: int) -> int:
    """The seed trial `number` of a study seeded `seed` initialises from, wherever it is retrained."""
    return seed * 100_003 + number


def trial_attrs(g: space.Genotype, cx: space.Complexity, proxy: space.Genotype, pcx: space.Complexity,
                settings: Settings, device: torch.device) -> dict:
    """What a trained trial records before training: the genotype, its design axes and both costs."""
    return {"genotype": space.schema.canonical_json(g), "digest": space.digest(g), **design_axes(g),
            "flops": cx.flops, "params": cx.params, "proxy_genotype": space.schema.canonical_json(proxy),
            "proxy_flops": pcx.flops, "proxy_params": pcx.params, "dataset": settings.dataset,
            "device": str(device), **({"latency_ms": latency_ms(g, settings)} if settings.latency_device else {})}


# The data and device a study's trials train on -------------------------------------------------------

@dataclass
class Context:
    settings: Settings
    data: datasets.Splits
    recipe: Recipe
    device: torch.device
    data_dir: Path | None = None
    rung_data: dict = field(default_factory=dict)  # (resolution, training images) -> the Splits a rung trains on


def at_rung(ctx: Context, rung: int) -> Context:
    """Where a promotion to `rung` trains: the study's context with the rung's epochs, training images,
    resolution and width (explorer.base.ladder). Its validation images are the study's: the split is drawn
    from the same seed before the training subset, so accuracies compare across rungs."""
    if not rung:
        return ctx
    r = ctx.settings.rungs[rung - 1]
    settings = replace(ctx.settings, proxy_resolution=r["resolution"], proxy_width=r["width"],
                       train_images=r["train_images"], recipe=replace(ctx.settings.recipe, epochs=r["epochs"]))
    key = (r["resolution"], r["train_images"])
    if key not in ctx.rung_data:
        ctx.rung_data[key] = load_data(settings, ctx.data_dir)
    return Context(settings, ctx.rung_data[key], settings.recipe, ctx.device, ctx.data_dir,
                   ctx.rung_data)


def check_device(settings: Settings, device: torch.device) -> None:
    """A study's trials all train on one kind of device, in one precision: a worker or a resume on
    another is refused in one line (its trials would not compare)."""
    here = device_settings(device)
    if (settings.device, settings.precision) != (here["device"], here["precision"]):
        made = " ".join(filter(None, (settings.device, settings.device_name)))
        raise UserError(f"--device: this study's trials train on {made} in {settings.precision}; this is "
                        f"{here['device']} {here['device_name']} ({here['precision']}), whose trials don't compare "
                        f"with them: resume it on a {settings.device} device that trains in {settings.precision}, "
                        "or start another --study")


def prepare(settings: Settings, device: str, data_dir=None) -> Context:
    dev = resolve_device(device)
    check_device(settings, dev)
    check_latency_device(settings, device)
    if settings.latency_device:
        latency_table(settings, dev)  # new ops time on this process's GPU, not GPU 0
    data = load_data(settings, data_dir)
    check_splits(data, settings.recipe)
    return Context(settings, data, settings.recipe, dev, data_dir)


def load_data(settings: Settings, data_dir=None) -> datasets.Splits:
    """The study's proxy data: its dataset at the proxy resolution, split as its settings say."""
    return datasets.load(settings.dataset, resolution=settings.proxy_resolution, data_dir=data_dir,
                         seed=settings.seed, val_images=settings.val_images, train_images=settings.train_images)


def check_splits(data: datasets.Splits, recipe: Recipe) -> None:
    """Refuse, before any trial, a dataset whose splits can't train or validate a proxy."""
    if len(data.train_y) < recipe.batch_size:
        raise UserError(f"--batch-size: {recipe.batch_size} is more than the {len(data.train_y)} training images "
                        f"of {data.name} (after holding out validation); use --batch-size {len(data.train_y)} "
                        "or less, or add images")
    if len(data.val_y) == 0:
        raise UserError(f"--dataset: {data.name} has too few images to hold out a validation split; add images")


# The classics, for comparison ----------------------------------------------------------------------

def nearest_named(g: space.Genotype, flops: int, params: int, resolution: int) -> str:
    """The classic closest to a genotype: same family first, then by log-FLOPs and log-params."""
    best, best_d = "", math.inf
    for name in names():
        try:
            cx = _classic_cost(name, resolution)
        except space.GenotypeError:
            continue
        d = abs(math.log(cx[0] / flops)) + abs(math.log(cx[1] / params)) + (0 if named(name).family == g.family else 10)
        if d < best_d:
            best, best_d = name, d
    return best


_CLASSIC_COSTS: dict[tuple[str, int], tuple[int, int]] = {}


def _classic_cost(name: str, resolution: int) -> tuple[int, int]:
    if (name, resolution) not in _CLASSIC_COSTS:
        cx = price(named(name), resolution)
        _CLASSIC_COSTS[name, resolution] = (cx.flops, cx.params)
    return _CLASSIC_COSTS[name, resolution]
