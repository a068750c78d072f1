"""Every default of a search, defined once, from the inside out.

- `Recipe`: how one network trains (the trainer's hyperparameters);
- `ProxySpec`: how a genotype becomes a trained proxy; its recipe defaults are `Recipe`'s;
- `Settings`: what a study stores, so a rerun resumes it and a worker joins it;
- `FLAGS`: each `explore search` flag's help, the default `--help` shows and its valid values.
  cli.py builds the options from it and explorer.commands.runner checks values with it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .budget import FLOP_FORMS, TIME_FORMS, format_flops, format_ms
from .errors import UserError
from .ladder import ETA, IMAGE_CAP, TOP_SEEDS, describe

# Training -----------------------------------------------------------------------------------------

SCHEDULES = ("onecycle", "cosine")
REFERENCE_BATCH = 128  # Recipe.lr is the peak LR at this batch size


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training run; the defaults are `explore search`'s proxy training.

    ``lr`` is the peak learning rate for a batch of 128; it is scaled linearly
    with ``batch_size`` (Goyal et al.), so lr and batch size can be searched
    independently.  ``crop_padding`` pads each side before the random crop
    (0 disables it); horizontal flips are used only when the data allows them.
    """

    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "onecycle"
    crop_padding: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0 or self.crop_padding < 0:
            raise ValueError("lr must be positive; momentum, weight_decay, crop_padding non-negative")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("label_smoothing must be in [0, 1)")

    @property
    def peak_lr(self) -> float:
        """The learning rate actually used at the top of the schedule."""
        return self.lr * self.batch_size / REFERENCE_BATCH

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """Build from a dict; unknown keys are an error so typos don't pass silently."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown Recipe keys: {sorted(unknown)}")
        return cls(**d)


# Proxies ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProxySpec:
    """How a genotype becomes a trained proxy. The defaults are `explore search`'s on Fashion-MNIST
    and MNIST: what benchmarks/fidelity.py measured ranking best within the 5-minute default
    search (benchmarks/RESULTS.md)."""
    resolution: int = 12
    width: float = 0.5
    depth: int = 1
    epochs: int = Recipe.epochs
    train_images: int | None = 3000  # class-balanced subset of the training split (None: all)
    batch_size: int = Recipe.batch_size

    def recipe(self, seed: int = 0) -> Recipe:
        return Recipe(epochs=self.epochs, batch_size=self.batch_size, seed=seed)


PROXY = ProxySpec()


def default_proxy_resolution(dataset: str) -> int:
    """The default proxy's for the 28 px sets; digits' 8 px upsampled; 32 px for colour images."""
    if dataset in ("fashion-mnist", "mnist"):
        return PROXY.resolution
    return 16 if dataset == "digits" else 32


# Data ---------------------------------------------------------------------------------------------

DEFAULT_DATASET = "fashion-mnist"  # hard enough that proxies don't all score 0.99
FALLBACK_DATASET = "digits"        # embedded: what a default search uses when the default can't be had
# Validation images held out of the training split: at most VAL_IMAGES (one accuracy point is
# then 20 images), at most VAL_FRACTION of a small dataset.
VAL_IMAGES = 2000
VAL_FRACTION = 0.1

# Strategies ---------------------------------------------------------------------------------------

SAMPLERS = ("nsga2", "tpe", "random", "nsga3", "gp")
SCORES = ("synflow", "naswot", "snip", "grad_norm", "params")  # zero-cost scores, explorer.trial.scores
SCORE_BATCH = 64  # images in a zero-cost score's minibatch
PRUNERS = ("none", "pareto")
OBJECTIVES = ("flops", "latency", "params")  # the second objective, minimised beside proxy accuracy
HEARTBEAT = (60, 120)  # seconds: a running trial's heartbeat interval, and the grace before it is failed


# What a study stores --------------------------------------------------------------------------------

# Settings that change what a trial's numbers mean: they can't change on resume.
COMPARABLE = ("space_digest", "budget", "max_params", "resolution", "dataset", "proxy_resolution",
              "proxy_width", "proxy_depth", "train_images", "val_images", "recipe",
              # which genotypes get trained (pre-screening) and how they train (stochastic depth):
              "prescreen", "prescreen_score", "stochastic_depth",
              # what the second objective is, and the latency budget (the device is checked apart: resume_on)
              "objective", "latency_budget",
              # the rungs above the proxy that multi-fidelity promotion trains (explorer.base.ladder)
              "rungs")
# What a study made before a setting existed did instead (the new default may differ).
LEGACY = {"short_names": False, "train_images": None, "rungs": []}


@dataclass
class Settings:
    space: str = "union"
    space_doc: Any = None          # the resolved space, so a worker needs no file
    space_digest: str = ""
    budget: int = 0                # FLOPs (multiply-adds) at `resolution`, 1000 classes (0: a latency budget)
    latency_budget: float | None = None  # ms per forward pass at batch 1 and `resolution`, predicted
    latency_device: dict | None = None   # the latency table's key (explorer.trial.latency.DeviceKey)
    objective: str = OBJECTIVES[0]
    max_params: int | None = None
    resolution: int = 224
    dataset: str = DEFAULT_DATASET
    proxy_resolution: int = PROXY.resolution
    proxy_width: float = PROXY.width
    proxy_depth: int = PROXY.depth
    train_images: int | None = PROXY.train_images  # class-balanced training subset (None: the whole split)
    val_images: int | None = None  # held-out validation images (None: explorer.trial.data.default_val_images)
    recipe: dict = field(default_factory=lambda: Recipe().to_dict())
    sampler: str = SAMPLERS[0]
    seed: int = 0
    trials: int = 12               # completed trials the study aims for
    # zero-cost pre-screening: train the best of `prescreen` feasible draws by `prescreen_score` (1: off)
    prescreen: int = 1
    prescreen_score: str = SCORES[0]
    stochastic_depth: float | None = None  # p_L of Huang et al.'s linear decay rule (None: off)
    prune: str = PRUNERS[0]        # "pareto": stop trials dominated at an epoch by >= prune_k others
    prune_k: int = 2
    rungs: list = field(default_factory=list)  # rungs 1, 2, ... as explorer.base.ladder.Rung dicts ([]: no promotion)
    # Optuna parameter names: short (`mobilenet.s3.b0.repeat`) or the document paths studies made before used
    short_names: bool = True

    def to_json(self) -> str:
        """The settings less the space document (stored apart, see explorer.studies.store)."""
        data = asdict(self)
        del data["space_doc"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        data = {**LEGACY, **json.loads(text)}
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @property
    def budget_text(self) -> str:
        """`2.00 GFLOPs (multiply-adds)`, or `20.00 ms (predicted, batch 1)` for a time budget."""
        if self.latency_budget:
            return f"{format_ms(self.latency_budget)} (predicted, batch 1)"
        return f"{format_flops(self.budget)} (multiply-adds)"

    @property
    def proxy(self) -> ProxySpec:
        return ProxySpec(self.proxy_resolution, self.proxy_width, self.proxy_depth, self.recipe["epochs"],
                         self.train_images, self.recipe["batch_size"])

    def differences(self, other: "Settings") -> list[str]:
        """What differs, stored value first, one short item per key: `epochs 2 → 3`."""
        out = []
        for key in COMPARABLE:
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine == theirs:
                continue
            if key == "space_digest":
                out.append(f"space {other.space} (digest {theirs}) → {self.space} (digest {mine})")
            elif key == "budget":
                out.append(f"budget {format_flops(theirs)} → {format_flops(mine)}")
            elif key == "latency_budget":
                shown = [_shown(ms and format_ms(ms)) for ms in (theirs, mine)]
                out.append(f"latency budget {shown[0]} → {shown[1]}")
            elif key == "rungs":
                out.append(f"rungs {describe(theirs)} → {describe(mine)}")
            elif key == "recipe":
                out += [f"{k} {_shown(theirs.get(k))} → {_shown(mine.get(k))}"
                        for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
            else:
                out.append(f"{key.replace('_', ' ')} {_shown(theirs)} → {_shown(mine)}")
        return out


def _shown(value) -> str:
    return "off" if value is None else str(value)


# The flags of `explore search` ----------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """One search flag: its --help panel and text, the default shown there, and its valid values."""
    panel: str
    help: str
    default: str | None = None     # as --help shows it; None: nothing shown
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(filter(None, (self.help, self.default and f"[default: {self.default}]")))

    def check(self, name: str, value) -> None:
        """Refuse a value outside the flag's range or choices, in one line naming the flag."""
        flag = "--" + name.replace("_", "-")
        if value is None:
            return
        if self.choices and value not in self.choices:
            raise UserError(f"{flag}: unknown value '{value}'; choose one of {', '.join(self.choices)}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise UserError(f"{flag}: {value} is out of range; use {self.low:g} to {self.high:g}")


BUDGET, PROXY_PANEL, DATA, BEYOND = "Budget and space", "Proxy and training", "Data", "Beyond accuracy"
_DEFAULT = Settings()
_OR = " or ".join
FLAGS = {
    "budget": Flag(BUDGET, f"FLOPs (multiply-adds) of the deployed network at --resolution ({FLOP_FORMS}), "
                   f"or its latency at batch 1 on --device, predicted from the device's lookup table ({TIME_FORMS}) "
                   "[required for a new study]"),
    "objective": Flag(BUDGET, "the second objective, minimised beside proxy accuracy: "
                      f"{', '.join(OBJECTIVES)}", f"{_DEFAULT.objective}, or latency with a time budget",
                      choices=OBJECTIVES),
    "max_params": Flag(BUDGET, "parameter cap, e.g. 5M"),
    "space": Flag(BUDGET, "a shipped space or a YAML file", _DEFAULT.space),
    "trials": Flag(BUDGET, "completed (trained) trials to aim for", str(_DEFAULT.trials), 1, 1_000_000),
    "sampler": Flag(BUDGET, _OR([", ".join(SAMPLERS[:-1]), SAMPLERS[-1]]), _DEFAULT.sampler, choices=SAMPLERS),
    "seed": Flag(BUDGET, "", str(_DEFAULT.seed)),  # its range, shared with other commands, is in cli.py
    "epochs": Flag(PROXY_PANEL, "proxy training epochs", str(Recipe.epochs), 1, 10_000),
    "batch_size": Flag(PROXY_PANEL, "", str(Recipe.batch_size), 1, 65536),
    "lr": Flag(PROXY_PANEL, "peak learning rate for a batch of 128, scaled with the batch (SGD with Nesterov "
               "momentum, one-cycle schedule, label smoothing)", str(Recipe.lr), 0),
    "resolution": Flag(PROXY_PANEL, "input resolution the budget is priced at", str(_DEFAULT.resolution), 8, 8192),
    "proxy_resolution": Flag(PROXY_PANEL, "resolution proxies train at",
                             f"{PROXY.resolution} for fashion-mnist and mnist, {default_proxy_resolution('digits')} "
                             f"for digits, else {default_proxy_resolution('cifar10')}", 8, 8192),
    "proxy_width": Flag(PROXY_PANEL, "proxy width factor", f"{PROXY.width:g}", 0.01, 16),
    "proxy_depth": Flag(PROXY_PANEL, "cap on each block's repeat", str(PROXY.depth), 1, 1000),
    "dataset": Flag(DATA, "fashion-mnist, digits (embedded), cifar10, mnist or imagefolder:PATH",
                    f"{DEFAULT_DATASET} when it can be had (cache, Debian's dataset-fashion-mnist, download), "
                    f"else {FALLBACK_DATASET}"),
    "train_images": Flag(DATA, "class-balanced subset of the training split that proxies train on",
                         f"{PROXY.train_images}", 1, 100_000_000),
    "val_images": Flag(DATA, "class-balanced validation images held out of the training split",
                       f"{VAL_IMAGES}, at most {VAL_FRACTION:.0%} of it", 1, 100_000_000),
    "prescreen": Flag(BEYOND, "draw K budget-feasible candidates per trial and train the best by "
                      "--prescreen-score", f"{_DEFAULT.prescreen}, off", 1, 1000),
    "prescreen_score": Flag(BEYOND, f"zero-cost score for --prescreen: {', '.join(SCORES)}",
                            _DEFAULT.prescreen_score, choices=SCORES),
    "prune": Flag(BEYOND, "none, or pareto: stop a trial whose (FLOPs, accuracy at epoch e) is dominated by "
                  "--prune-k trials at epoch e", _DEFAULT.prune, choices=PRUNERS),
    "prune_k": Flag(BEYOND, "dominating trials needed to stop one", str(_DEFAULT.prune_k), 1, 1000),
    "rungs": Flag(BEYOND, f"multi-fidelity promotion: N rungs in all, each training {ETA}x the images (up to "
                  f"{IMAGE_CAP:,}) or epochs of the one below, the best 1/{ETA} of a rung by non-dominated sorting "
                  f"promoted to the next, the top rung with {TOP_SEEDS} seeds; or the rungs above the proxy spelled "
                  "out, e.g. 'images=9000, epochs=6/seeds=3'", "off"),
    "stochastic_depth": Flag(BEYOND, "train residual blocks with stochastic depth, survival decaying linearly "
                             "to this p_L, e.g. 0.5", "off", 0.0, 1.0),
}
