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
from .device_key import DeviceKey
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

    def describe(self, training: bool = True) -> str:
        """The proxy in words, as every table and page shows it; `training`: with its epochs and images."""
        shape = f"{self.resolution}px, width x{self.width:g}, repeats <= {self.depth}"
        if not training:
            return shape
        images = "all" if self.train_images is None else f"{self.train_images:,}"
        return f"{shape}, {self.epochs} epochs, {images} training images"


PROXY = ProxySpec()
# A new study on a CUDA GPU: the CPU default (~7 MMAC per image, batch 64) keeps an H200 ~0.05% busy,
# bound by kernel launches, so a GPU affords a more faithful proxy: native resolution (28 px for
# Fashion-MNIST and MNIST), width x1, the whole training split, batch 512. Provisional: it awaits
# measurement against benchmarks/fidelity-truth.json (being computed) and a GPU run of
# benchmarks/gpu_check.sh; change it here, the one place its numbers live.
GPU_PROXY = ProxySpec(resolution=28, width=1.0, depth=2, epochs=4, train_images=None, batch_size=512)
PRESETS = {"cpu": PROXY, "cuda": GPU_PROXY}  # by device kind (torch.device.type)


# The image side of each named set; a set's proxy resolution follows from it (`default_proxy_resolution`).
NATIVE_SIDES = {"digits": 8, "mnist": 28, "fashion-mnist": 28, "cifar10": 32}


def proxy_preset(device: str) -> ProxySpec:
    """The proxy a new study gets on a device of this kind; any kind but cuda gets the CPU's."""
    return PRESETS.get(device, PROXY)


def default_proxy_resolution(dataset: str, side: int | None = None, proxy: ProxySpec = PROXY) -> int:
    """From the images' side (`side`, else the named set's): the preset's (`proxy`) for 28 px images and
    smaller, 16 px for 8 px ones like digits (upsampled), 32 px for larger ones like CIFAR-10 and image folders."""
    side = side or NATIVE_SIDES.get(dataset)
    if side is None or side > 28:
        return 32
    return 16 if side <= 8 else proxy.resolution


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
RESOLUTIONS = (8, 8192)  # every --resolution flag's range (px): below 8 no network in the shipped spaces survives
PRECISIONS = ("fp32", "bf16", "fp16")  # how proxies train: explorer.trial.device.precision_for picks one
# cuDNN's autotuner while a proxy trains (explorer.trial.device): off, since every trial is a new architecture
CUDNN_BENCHMARK = False
HEARTBEAT = (60, 120)  # seconds: a running trial's heartbeat interval, and the grace before it is failed

# Design-space refinement (explorer.analysis.axes and refine), after pycls's get_filters: resample this share of the
# drawn trials, keep the best, this many times; the good range is the central GOOD_INTERVAL of the kept values.
BOOTSTRAP = {"resamples": 10_000, "share": 0.25, "interval": 0.95}
REFINE_MIN_TRIALS = 30  # completed drawn trials a study needs before its good ranges mean anything
PARAM_MIN_TRIALS = 10   # a space parameter fewer drawn trials took is left as it is


# What a study stores --------------------------------------------------------------------------------

# Settings that change what a trial's numbers mean: they can't change on resume.
COMPARABLE = ("space_digest", "budget", "max_params", "resolution", "dataset", "proxy_resolution",
              "proxy_width", "proxy_depth", "train_images", "val_images", "recipe",
              # which genotypes get trained (pre-screening) and how they train (stochastic depth):
              "prescreen", "prescreen_score", "stochastic_depth",
              # what the second objective is, and the latency budget (the device is checked apart: resume_on)
              "objective", "latency_budget",
              # your own data's identity: content digest, image shape and classes (explorer.trial.userdata)
              "data",
              # the kind of device trials train on, and the precision: bf16 or fp16 trials don't mix with fp32 ones
              "device", "precision",
              # the rungs above the proxy that multi-fidelity promotion trains (explorer.base.ladder)
              "rungs")
# What a study made before a setting existed did instead (the new default may differ). Before the device
# was stored, no CUDA path had ever run: those studies trained on CPU, in fp32.
LEGACY = {"short_names": False, "train_images": None, "device": "cpu", "precision": "fp32", "rungs": []}


@dataclass
class Settings:
    space: str = "union"
    space_doc: Any = None          # the resolved space, so a worker needs no file
    space_digest: str = ""
    budget: int = 0                # FLOPs (multiply-adds) at `resolution`, 1000 classes (0: a latency budget)
    latency_budget: float | None = None  # ms per forward pass at batch 1 and `resolution`, predicted
    latency_device: DeviceKey | None = None  # the latency table's key, stored as its dict
    objective: str = OBJECTIVES[0]
    max_params: int | None = None
    resolution: int = 224
    dataset: str = DEFAULT_DATASET
    data: dict | None = None       # your own data's identity (digest, shape, classes), never the data itself
    proxy_resolution: int = PROXY.resolution
    proxy_width: float = PROXY.width
    proxy_depth: int = PROXY.depth
    train_images: int | None = PROXY.train_images  # class-balanced training subset (None: the whole split)
    val_images: int | None = None  # held-out validation images (None: explorer.trial.data.default_val_images)
    recipe: Recipe = field(default_factory=Recipe)  # stored as its dict
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
    device: str = "cpu"            # the kind of device trials train on: cpu or cuda (torch.device.type)
    device_name: str = ""          # its model (the GPU's or the CPU's) when the study was made, for the record
    precision: str = PRECISIONS[0]
    cudnn_benchmark: bool = CUDNN_BENCHMARK

    def __post_init__(self) -> None:
        if isinstance(self.recipe, dict):  # as stored, or as a caller wrote it
            self.recipe = Recipe.from_dict(self.recipe)
        if isinstance(self.latency_device, dict):
            self.latency_device = DeviceKey.from_dict(self.latency_device)

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
        return ProxySpec(self.proxy_resolution, self.proxy_width, self.proxy_depth, self.recipe.epochs,
                         self.train_images, self.recipe.batch_size)

    def differences(self, other: "Settings") -> list[str]:
        """What differs, stored value first, one short item per key: `epochs 2 → 3`."""
        out = []
        for key in COMPARABLE:
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine == theirs or (key == "dataset" and self.data and other.data and self.data != other.data):
                continue  # other data of one's own: the data's own difference below says more
            if key == "space_digest":
                out.append(f"space {other.space} (digest {theirs}) → {self.space} (digest {mine})")
            elif key == "budget":
                out.append(f"budget {format_flops(theirs)} → {format_flops(mine)}")
            elif key == "latency_budget":
                shown = [_shown(ms and format_ms(ms)) for ms in (theirs, mine)]
                out.append(f"latency budget {shown[0]} → {shown[1]}")
            elif key == "data":
                out.append(f"data {_data_text(theirs)} → {_data_text(mine)}")
            elif key == "rungs":
                out.append(f"rungs {describe(theirs)} → {describe(mine)}")
            elif key == "recipe":
                mine, theirs = mine.to_dict(), theirs.to_dict()
                out += [f"{k} {_shown(theirs[k])} → {_shown(mine[k])}" for k in sorted(mine) if mine[k] != theirs[k]]
            else:
                out.append(f"{key.replace('_', ' ')} {_shown(theirs)} → {_shown(mine)}")
        return out


def new_study_defaults(device: str) -> Settings:
    """A new study's settings before its flags apply: the proxy preset of its device kind."""
    p = proxy_preset(device)
    return Settings(proxy_resolution=p.resolution, proxy_width=p.width, proxy_depth=p.depth,
                    train_images=p.train_images, recipe=p.recipe(), device=device)


def _shown(value) -> str:
    return "off" if value is None else str(value)


def _data_text(identity: dict | None) -> str:
    if not identity:
        return "a named dataset"
    return (f"{identity['images']} images of {'x'.join(map(str, identity['shape']))}, {identity['classes']} classes, "
            f"digest {identity['digest']}")


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


def _on_gpu(field: str) -> str:
    """A preset's default as --help shows it: the CPU's, and the GPU's where it differs."""
    cpu, gpu = (getattr(p, field) for p in (PROXY, GPU_PROXY))
    shown = ["all" if v is None else f"{v:g}" for v in (cpu, gpu)]
    return shown[0] if cpu == gpu else f"{shown[0]}; {shown[1]} for a new study on CUDA"


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
    "epochs": Flag(PROXY_PANEL, "proxy training epochs", _on_gpu("epochs"), 1, 10_000),
    "batch_size": Flag(PROXY_PANEL, "", _on_gpu("batch_size"), 1, 65536),
    "lr": Flag(PROXY_PANEL, "peak learning rate for a batch of 128, scaled with the batch (SGD with Nesterov "
               "momentum, one-cycle schedule, label smoothing)", str(Recipe.lr), 0),
    "resolution": Flag(PROXY_PANEL, "input resolution the budget is priced at", str(_DEFAULT.resolution),
                       *RESOLUTIONS),
    "proxy_resolution": Flag(PROXY_PANEL, "resolution proxies train at",
                             f"{PROXY.resolution} ({GPU_PROXY.resolution} for a new study on CUDA) for images of 9 to "
                             f"28 px (fashion-mnist, mnist), {default_proxy_resolution('digits')} for smaller ones "
                             f"(digits), else {default_proxy_resolution('cifar10')}", *RESOLUTIONS),
    "proxy_width": Flag(PROXY_PANEL, "proxy width factor", _on_gpu("width"), 0.01, 16),
    "proxy_depth": Flag(PROXY_PANEL, "cap on each block's repeat", _on_gpu("depth"), 1, 1000),
    "cudnn_benchmark": Flag(PROXY_PANEL, "cuDNN's autotuner while proxies train on CUDA: it times every conv "
                            "algorithm for each new architecture, which pays only for trials of many steps", "off"),
    "dataset": Flag(DATA, "fashion-mnist, digits (embedded), cifar10, mnist, imagefolder:PATH, or npz:PATH (arrays x "
                    "and y, NCHW or NHWC, uint8 or float; optional x_val/y_val, x_test/y_test)",
                    f"{DEFAULT_DATASET} when it can be had (cache, Debian's dataset-fashion-mnist, download), "
                    f"else {FALLBACK_DATASET}"),
    "train_images": Flag(DATA, "class-balanced subset of the training split that proxies train on",
                         _on_gpu("train_images"), 1, 100_000_000),
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
