"""The whole network, stem -> stages -> head, and its analytic complexity.

`build` and `complexity` walk the genotype the same way; `complexity` never
builds a module, so a search can price thousands of candidates a second.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from . import schema as S
from .blocks import Stage
from .cost import NORM_FLOPS, Cost
from .errors import GenotypeError
from .ops import Branch, Context
from .resolve import load


MAX_BUILD_PARAMS = 1_000_000_000  # a valid document can describe more than memory holds; build() refuses it


class Head(nn.Module):
    """ops -> adaptive pool -> flatten -> [linear, act, (layer norm), dropout] per hidden layer -> dropout
    -> classifier."""

    def __init__(self, spec: S.Head, shape: tuple[int, int, int], ctx: Context, num_classes: int):
        super().__init__()
        self.ops = Branch(spec.ops, shape[0], ctx)
        c, h, w = Branch.complexity(spec.ops, *shape, ctx, Cost())
        pool = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}.get(spec.pool)
        self.pool = pool(spec.size) if pool else nn.Identity()
        n = c * spec.size * spec.size if pool else c * h * w
        layers: list[nn.Module] = [nn.Flatten()]
        for width in spec.hidden:
            layers += [nn.Linear(n, width), ctx.act_layer()]
            if spec.norm == "layer":
                layers.append(nn.LayerNorm(width, eps=ctx.eps))
            layers.append(nn.Dropout(spec.dropout))
            n = width
        if not spec.hidden and spec.dropout:
            layers.append(nn.Dropout(spec.dropout))
        layers.append(nn.Linear(n, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.ops(x)))

    def reset(self, num_classes: int) -> None:
        """A fresh classifier for `num_classes` (0: none, the head then ends at its pre-logits)."""
        fc = self.classifier[-1]
        n = fc.in_features if isinstance(fc, nn.Linear) else fc.n
        self.classifier[-1] = nn.Linear(n, num_classes) if num_classes else _PreLogits(n)

    @staticmethod
    def complexity(spec: S.Head, c: int, h: int, w: int, ctx: Context, cost: Cost, num_classes: int):
        try:
            c, h, w = Branch.complexity(spec.ops, c, h, w, ctx, cost)
        except GenotypeError as e:
            raise e.within("ops") from None
        if spec.pool == "avg":
            cost.flops += c * h * w
        n = c * h * w if spec.pool == "none" else c * spec.size * spec.size
        for width in spec.hidden:
            cost.linear(n, width)
            if spec.norm != "none":
                cost.norm(width, 1, 1, NORM_FLOPS[spec.norm])
            n = width
        cost.linear(n, num_classes)


class _PreLogits(nn.Identity):
    """What a reset to 0 classes leaves in the classifier's place: remembers its width for a later reset."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n


def _head_params(spec: S.Head, c: int, h: int, w: int, ctx: Context, num_classes: int) -> int:
    cost = Cost()
    Head.complexity(spec, c, h, w, ctx, cost, num_classes)
    return cost.params


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

    def __init__(self, g: S.Genotype, num_classes: int = 1000, in_channels: int = 3, resolution: int | None = None):
        super().__init__()
        ctx = Context(g)
        self.genotype = g
        self.num_classes = num_classes
        size = resolution or g.resolution
        self.stem = Branch(g.stem, in_channels, ctx)
        shape = Branch.complexity(g.stem, in_channels, size, size, ctx, Cost())
        self.stages = nn.Sequential()
        self.feature_info = FeatureInfo()
        for i, spec in enumerate(g.stages):
            stage = Stage(spec, shape, ctx, num_classes, Head)
            name = spec.name or f"stage{i}"
            self.stages.add_module(name, stage)
            shape = stage.shape
            self.feature_info.append(dict(num_chs=shape[0], reduction=_reduction(size, shape[1]),
                                          module=f"stages.{name}"))
        self.head = Head(g.head, shape, ctx, num_classes)
        self.num_features = Branch.complexity(g.head.ops, *shape, ctx, Cost())[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """stem -> stages -> the head's ops: the feature map before pooling (auxiliary heads skipped)."""
        x = self.stages(self.stem(x))
        return self.head.ops(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """pool -> flatten -> hidden layers -> dropout, then the classifier unless `pre_logits`."""
        x = self.head.pool(x)
        return self.head.classifier[:-1](x) if pre_logits else self.head.classifier(x)

    def forward(self, x: torch.Tensor):
        x = self.stem(x)
        aux = []
        for stage in self.stages:
            for block in stage:
                x = block(x)
                if block.aux is not None and self.training:
                    aux.append(block.aux(x))
        logits = self.head(x)
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
    """FLOPs (multiply-adds), params and activations from the genotype alone.

    Resolution and classes default to the genotype's canonical ones."""
    g = load(g)
    resolution = g.resolution if resolution is None else resolution
    num_classes = g.classes if num_classes is None else num_classes
    S.check_range("resolution", resolution)
    S.check_range("classes", num_classes)
    ctx = Context(g)
    cost = Cost()
    parts: list[Part] = []
    c, h, w = in_channels, resolution, resolution
    mark = (0, 0, 0)

    def close(name: str, blocks: int) -> None:
        nonlocal mark
        if breakdown:
            f, p, a = cost.as_tuple()
            parts.append(Part(name, blocks, c, (h, w), f - mark[0], p - mark[1], a - mark[2]))
            mark = (f, p, a)

    try:
        c, h, w = Branch.complexity(g.stem, c, h, w, ctx, cost)
    except GenotypeError as e:
        raise _vanish(e.within("stem"), resolution) from None
    close("stem", 0)
    for i, stage in enumerate(g.stages):
        try:
            c, h, w = Stage.complexity(stage, c, h, w, ctx, cost,
                                       lambda spec, c, h, w, ctx: _head_params(spec, c, h, w, ctx, num_classes))
        except GenotypeError as e:
            raise _vanish(e.within(f"stages[{i}]"), resolution) from None
        close(stage.name or f"stage{i}", sum(b.repeat for b in stage.blocks))
    try:
        Head.complexity(g.head, c, h, w, ctx, cost, num_classes)
    except GenotypeError as e:
        raise _vanish(e.within("head"), resolution) from None
    close("head", 0)
    return Complexity(cost.flops, cost.params, cost.acts, resolution, parts)


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
    cx = complexity(g, resolution, num_classes, in_channels, breakdown=False)  # validates every shape first
    if cx.params > MAX_BUILD_PARAMS:
        raise GenotypeError("", f"{cx.params:,} parameters; build() stops at {MAX_BUILD_PARAMS:,} "
                            f"({4 * MAX_BUILD_PARAMS / 2**30:.0f} GiB of float32 weights): narrow or shorten it")
    net = Network(g, num_classes or g.classes, in_channels, resolution)
    return Features(net, out_indices) if features_only else net


def residual_blocks(model: nn.Module) -> list:
    """The residual Block modules of a built network, input to output."""
    from .blocks import Block
    return [m for m in model.modules() if isinstance(m, Block) and m.skip == "residual"]


def stochastic_depth(model: nn.Module, p_last: float | None) -> list[float]:
    """Stochastic depth (Huang et al. 2016) with the paper's linear decay rule: residual block l of L
    survives with p_l = 1 - l/L (1 - p_L), so the last one survives with p_L (0.5 in the paper).

    Sets each residual block's `survival` and returns the probabilities; None or 1 turns it off.
    Blocks without a residual skip are never dropped (there is no path around them)."""
    blocks = residual_blocks(model)
    p_last = 1.0 if p_last is None else float(p_last)
    if not 0 < p_last <= 1:
        raise ValueError(f"stochastic depth: p_L must be in (0, 1], got {p_last}")
    survival = [1 - (l / len(blocks)) * (1 - p_last) for l in range(1, len(blocks) + 1)]
    for block, p in zip(blocks, survival):
        block.survival = p
    return survival
