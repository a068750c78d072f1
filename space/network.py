"""The whole network, stem -> stages -> head, and its analytic complexity.

`complexity` sums the genotype's trace (space.trace) without building a
module, so a search can price thousands of candidates a second; `build`
records the trace and sizes its modules from the shapes in it.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from . import schema as S
from .blocks import Block, Stage, StochasticBranch
from .errors import GenotypeError
from .head import Head
from .ops import Branch, Context
from .resolve import load
from .trace import Recorder, Trace

MAX_BUILD_PARAMS = 1_000_000_000  # a valid document can describe more than memory holds; build() refuses it


class FeatureInfo(list):
    """Per stage, as timm gives it: dicts of num_chs, reduction (input size / feature size) and module."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


class Network(nn.Module):
    """The genotype as a module, with timm's conventions: forward_features, forward_head(pre_logits),
    reset_classifier, num_features and feature_info (one entry per stage)."""

    def __init__(self, g: S.Genotype, trace: Recorder, num_classes: int = 1000):
        """`trace`: the genotype's recorded trace (see `trace`), whose shapes size the stages and heads."""
        super().__init__()
        ctx = Context(g)
        self.genotype = g
        self.num_classes = num_classes
        in_channels, size, _ = trace.shapes["input"]
        self.stem = Branch(g.stem, in_channels, ctx)
        c = self.stem.c_out
        self.stages = nn.Sequential()
        self.feature_info = FeatureInfo()
        for i, spec in enumerate(g.stages):
            stage = Stage(spec, c, ctx, num_classes, trace, f"stages[{i}]")
            name = spec.name or f"stage{i}"
            self.stages.add_module(name, stage)
            c, h, _ = trace.shapes[f"stages[{i}]"]
            self.feature_info.append(dict(num_chs=c, reduction=_reduction(size, h), module=f"stages.{name}"))
        self.head = Head(g.head, c, ctx, num_classes, trace, "head")
        self.num_features = trace.shapes["head.ops"][0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """stem -> stages -> the head's ops: the feature map before pooling (auxiliary heads skipped)."""
        return self._features(x, with_aux=False)[0]

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature map, and (`with_aux`) the auxiliary heads' logits on the way, as `forward` returns them."""
        x = self.stem(x)
        aux = []
        for stage in self.stages:
            for block in stage:
                x = block(x)
                if with_aux and block.aux is not None:
                    aux.append(block.aux(x))
        return self.head.ops(x), aux

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """pool -> flatten -> hidden layers -> dropout, then the classifier unless `pre_logits`."""
        x = self.head.pool(x)
        return self.head.classifier[:-1](x) if pre_logits else self.head.classifier(x)

    def forward(self, x: torch.Tensor):
        """forward_head(forward_features(x)); in training, with the auxiliary heads' logits beside it."""
        features, aux = self._features(x, with_aux=self.training)
        logits = self.forward_head(features)
        return (logits, aux) if aux else logits

    def get_classifier(self) -> nn.Module:
        return self.head.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised classifiers (the main one and any auxiliary ones) for `num_classes`;
        0 removes them, so forward returns the pre-logits features."""
        self.num_classes = num_classes
        for head in [self.head] + [m.aux for m in self.modules() if getattr(m, "aux", None) is not None]:
            head.reset(num_classes)


class Features(nn.Module):
    """`build(..., features_only=True)`: the stem and stages of a Network, returning the outputs of the
    stages in `out_indices` (timm's features_only); the head is left out."""

    def __init__(self, net: Network, out_indices: tuple[int, ...] | None = None):
        super().__init__()
        n = len(net.stages)
        picked = tuple(range(n)) if out_indices is None else tuple(out_indices)
        for i in picked:
            if not -n <= i < n:
                raise GenotypeError("out_indices", f"{i} is out of range: the network has {n} stages (0 to {n - 1})")
        self.out_indices = tuple(sorted({i % n for i in picked}))
        self.stem = net.stem
        kept = list(net.stages.named_children())[:self.out_indices[-1] + 1]
        self.stages = nn.Sequential(OrderedDict(kept))  # the Network's module names, so its weights load
        self.feature_info = FeatureInfo(net.feature_info[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


def _reduction(resolution: int, size: int) -> int:
    """The nominal stride: the power of two nearest input size / feature size (299 -> 35 is 8)."""
    return 2 ** round(math.log2(resolution / size))


@dataclass
class Part:
    """One row of a complexity breakdown: the stem, a stage or the head."""
    name: str
    blocks: int
    channels: int
    size: tuple[int, int]
    flops: int
    params: int
    acts: int


@dataclass
class Complexity:
    flops: int  # multiply-adds, fvcore convention
    params: int
    acts: int
    resolution: int
    parts: list[Part] = field(default_factory=list)


def complexity(g: S.Genotype, resolution: int | None = None, num_classes: int | None = None,
               in_channels: int = 3, breakdown: bool = True) -> Complexity:
    """FLOPs (multiply-adds), params and activations from the genotype alone: the sum of its trace.

    Resolution and classes default to the genotype's canonical ones."""
    g, resolution, num_classes = _defaults(g, resolution, num_classes)
    t = Trace(Context(g))
    ends: list | None = [] if breakdown else None
    _walk(g, t, resolution, num_classes, in_channels, ends)
    parts, mark = [], (0, 0, 0)
    for name, blocks, (c, h, w), totals in ends or ():
        parts.append(Part(name, blocks, c, (h, w), *(now - then for now, then in zip(totals, mark))))
        mark = totals
    return Complexity(t.flops, t.params, t.acts, resolution, parts)


def trace(g, resolution: int | None = None, num_classes: int | None = None, in_channels: int = 3,
          partial: bool = False) -> Recorder:
    """The genotype's recorded trace: `.steps`, one Step per op (path, spec, shapes, cost, sources), and
    `.shapes`, the shape after the input, stem, each block repetition, stage and head's ops, by path.
    Its totals (`.flops`, `.params`, `.acts`) are `complexity`'s, and it raises GenotypeError as that does;
    with `partial`, it keeps what it traced up to the error instead, the error in `.error`."""
    g, resolution, num_classes = _defaults(g, resolution, num_classes)
    t = Recorder(Context(g))
    try:
        _walk(g, t, resolution, num_classes, in_channels)
    except GenotypeError as e:
        if not partial:
            raise
        t.error = e
    return t


def _defaults(g, resolution: int | None, num_classes: int | None) -> tuple[S.Genotype, int, int]:
    g = load(g)
    resolution = g.resolution if resolution is None else resolution
    num_classes = g.classes if num_classes is None else num_classes
    S.check_range("resolution", resolution)
    S.check_range("classes", num_classes)
    return g, resolution, num_classes


def _walk(g: S.Genotype, t: Trace, resolution: int, num_classes: int, in_channels: int,
          ends: list | None = None) -> None:
    """stem -> stages -> head through `t`; appends (name, blocks, shape, totals) at the end of each part
    to `ends` when given (complexity's breakdown)."""
    shape = (in_channels, resolution, resolution)
    t.shape("input", shape)
    t.stage = "stem"
    try:
        shape = Branch.complexity(g.stem, *shape, t, True, "stem")
    except GenotypeError as e:
        raise _vanish(e.within("stem"), resolution) from None
    t.shape("stem", shape)
    if ends is not None:
        ends.append(("stem", 0, shape, t.as_tuple()))
    for i, stage in enumerate(g.stages):
        t.stage = stage.name or f"stage{i}"
        try:
            shape = Stage.complexity(stage, *shape, t, num_classes, f"stages[{i}]")
        except GenotypeError as e:
            raise _vanish(e.within(f"stages[{i}]"), resolution) from None
        t.shape(f"stages[{i}]", shape)
        if ends is not None:
            ends.append((t.stage, sum(b.repeat for b in stage.blocks), shape, t.as_tuple()))
    t.stage = "head"
    try:
        Head.complexity(g.head, *shape, t, num_classes, "head")
    except GenotypeError as e:
        raise _vanish(e.within("head"), resolution) from None
    if ends is not None:
        ends.append(("head", 0, shape, t.as_tuple()))


def _vanish(e: GenotypeError, resolution: int) -> GenotypeError:
    if "doesn't fit" in e.reason:
        return GenotypeError(e.path, f"{e.reason}: the feature map vanishes at input resolution {resolution}; "
                             "use a larger resolution or fewer strides")
    return e


def build(g, num_classes: int | None = None, in_channels: int = 3, resolution: int | None = None,
          features_only: bool = False, out_indices: tuple[int, ...] | None = None) -> Network | Features:
    """A plain nn.Module whose module tree reads like the genotype. `g` is a genotype document, a registered
    name or a YAML/JSON file.

    `resolution` matters only to heads that flatten without pooling (and to feature_info's reductions).
    `features_only` gives the stem and stages, returning the outputs of the stages in `out_indices` (all)."""
    g = load(g)
    t = trace(g, resolution, num_classes, in_channels)  # validates every shape first
    if t.params > MAX_BUILD_PARAMS:
        raise GenotypeError("", f"{t.params:,} parameters; build() stops at {MAX_BUILD_PARAMS:,} "
                            f"({4 * MAX_BUILD_PARAMS / 2**30:.0f} GiB of float32 weights): narrow or shorten it")
    net = Network(g, t, num_classes or g.classes)
    return Features(net, out_indices) if features_only else net


def residual_blocks(model: nn.Module) -> list[Block]:
    """The residual Block modules of a built network, input to output."""
    return [m for m in model.modules() if isinstance(m, Block) and m.skip == "residual"]


def stochastic_depth(model: nn.Module, p_last: float | None) -> list[float]:
    """Stochastic depth (Huang et al. 2016) with the paper's linear decay rule: residual block l of L
    survives with p_l = 1 - l/L (1 - p_L), so the last one survives with p_L (0.5 in the paper).

    Gives each residual block a StochasticBranch of its p_l and returns the probabilities; None or 1 turns it off.
    Blocks without a residual skip are never dropped (there is no path around them)."""
    blocks = residual_blocks(model)
    p_last = 1.0 if p_last is None else float(p_last)
    if not 0 < p_last <= 1:
        raise ValueError(f"stochastic depth: p_L must be in (0, 1], got {p_last}")
    survival = [1 - (depth / len(blocks)) * (1 - p_last) for depth in range(1, len(blocks) + 1)]
    for block, p in zip(blocks, survival):
        block.stochastic_branch = StochasticBranch(p)
    return survival
