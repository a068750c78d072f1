"""Ops, the leaves of a genotype: each module's complexity() sits beside its
constructor and mirrors it call for call (the pycls discipline).

A leaf's complexity(spec, c, h, w, ctx, cost, first) takes the input shape,
adds the op's cost into `cost` and returns the output shape. `first` is False
for the repetitions of a block after its first, where strides become 1. The
composites' complexity() (Branch, Branches) walk their ops through a trace
(space.trace), which calls each leaf's and records it when a graph or a build
needs the steps.
"""
from __future__ import annotations

import torch
from torch import nn

from . import schema as S
from .cost import NORM_FLOPS, Cost, conv_size, pool_size
from .errors import GenotypeError

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU, "hardswish": nn.Hardswish}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of an N, C, H, W map (ConvNeXt's channels-first norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Context:
    """Genotype-wide settings every op needs: width multiplier, norm and activation."""
    __slots__ = ("width", "norm", "eps", "act", "norm_flops")

    def __init__(self, g: S.Genotype):
        self.width, self.norm, self.eps, self.act = g.width, g.norm, g.norm_eps, g.act
        self.norm_flops = NORM_FLOPS[g.norm]

    def channels(self, out: int | float, c_in: int) -> int:
        """An op's output channels: a fraction of the input (DenseNet transitions),
        or a count scaled by the width multiplier and kept a multiple of 8."""
        if isinstance(out, float):
            return max(1, int(c_in * out))
        if self.width == 1.0:
            return out
        return max(8, int(out * self.width + 4) // 8 * 8)

    def norm_layer(self, c: int) -> nn.Module:
        if self.norm == "none":
            return nn.Identity()
        return nn.BatchNorm2d(c, eps=self.eps) if self.norm == "batch" else LayerNorm2d(c, eps=self.eps)

    def norm_cost(self, cost: Cost, c: int, h: int, w: int) -> None:
        """What norm_layer(c) costs on an h x w map."""
        if self.norm_flops:
            cost.norm(c, h, w, self.norm_flops)

    def act_layer(self) -> nn.Module:
        return ACTIVATIONS[self.act]()

    def has_norm(self, order: str) -> bool:
        return "n" in order and self.norm != "none"


def _norm_side(order: str) -> int:
    """Where an op's norm sits: -1 before its conv (pre-activation), 1 after it, 0 none."""
    return 0 if "n" not in order else (-1 if order.index("n") < order.index("c") else 1)


class _NormSides(dict):
    """order string -> _norm_side(order), computed once per distinct order (a hot-path lookup)."""

    def __missing__(self, order: str) -> int:
        self[order] = side = _norm_side(order)
        return side


NORM_SIDE = _NormSides()


def as_pair(value) -> tuple[int, int]:
    """A kernel or padding as (height, width): a square one is given as one int."""
    return value if isinstance(value, tuple) else (value, value)


def _padding(spec) -> tuple[int, int]:
    if spec.padding is None:
        kh, kw = as_pair(spec.kernel)
        return kh // 2, kw // 2
    return as_pair(spec.padding)


def _bias(spec, ctx: Context) -> bool:
    return (not ctx.has_norm(spec.order)) if spec.bias is None else spec.bias


def groups_of(spec: S.Conv, c_in: int) -> int:
    return c_in if spec.groups == "depthwise" else spec.groups


def stride_at(spec, first: bool) -> int:
    """The op's stride in a block's first repetition; the later ones keep the map size."""
    return spec.stride if first else 1


def _check_fits(h: int, w: int, h_out: int, w_out: int, stride: int, window: str) -> None:
    """A map has vanished when a window no longer fits, or a stride steps over all of it."""
    if h_out < 1 or w_out < 1:
        raise GenotypeError("kernel", f"a {window} window doesn't fit the {h}x{w} feature map")
    if min(h, w) < stride:
        raise GenotypeError("stride", f"a stride of {stride} doesn't fit the {h}x{w} feature map")


def _wrap(order: str, core: list[tuple[str, nn.Module]], c_in: int, c_out: int, ctx: Context):
    """Place norm and activation around a conv core in the order `order` says."""
    layers, seen_conv = [], False
    for letter in order:
        if letter == "c":
            layers += core
            seen_conv = True
        elif letter == "n":
            layers.append(("norm", ctx.norm_layer(c_out if seen_conv else c_in)))
        else:
            layers.append(("act", ctx.act_layer()))
    return layers


def _named_sequential(module: nn.Sequential, layers: list[tuple[str, nn.Module]]) -> None:
    for name, layer in layers:
        module.add_module(name, layer)


class Conv(nn.Sequential):
    def __init__(self, spec: S.Conv, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.c_out = ctx.channels(spec.out, c_in)
        conv = nn.Conv2d(c_in, self.c_out, as_pair(spec.kernel), stride_at(spec, first), _padding(spec),
                         groups=groups_of(spec, c_in), bias=_bias(spec, ctx))
        _named_sequential(self, _wrap(spec.order, [("conv", conv)], c_in, self.c_out, ctx))

    @staticmethod
    def complexity(spec: S.Conv, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        # The hot path of every search (thousands of calls a second): helpers inlined, same rules.
        out, groups, kernel, pad = spec.out, spec.groups, spec.kernel, spec.padding
        c_out = out if (ctx.width == 1.0 and out.__class__ is int) else ctx.channels(out, c)
        if groups.__class__ is str:  # depthwise
            groups = c
        if groups != 1 and (c % groups or c_out % groups):
            raise GenotypeError("groups", f"{groups} groups don't divide {c if c % groups else c_out} channels")
        kh, kw = (kernel, kernel) if kernel.__class__ is int else kernel
        ph, pw = (kh // 2, kw // 2) if pad is None else ((pad, pad) if pad.__class__ is int else pad)
        s = spec.stride if first else 1
        h_out, w_out = (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1
        if h_out < 1 or w_out < 1 or h < s or w < s:
            _check_fits(h, w, h_out, w_out, s, f"{kh}x{kw}")
        norm = NORM_SIDE[spec.order] if ctx.norm_flops else 0
        cost.normed_conv(c, c_out, kh, kw, groups, (not norm) if spec.bias is None else spec.bias,
                         h, w, h_out, w_out, norm, ctx.norm_flops)
        return c_out, h_out, w_out


class Sep(nn.Sequential):
    def __init__(self, spec: S.Sep, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.c_out = ctx.channels(spec.out, c_in)
        core = [("depthwise", nn.Conv2d(c_in, c_in, as_pair(spec.kernel), stride_at(spec, first), _padding(spec),
                                        groups=c_in, bias=False))]
        for letter in spec.mid:
            core.append(("mid_norm", ctx.norm_layer(c_in)) if letter == "n" else ("mid_act", ctx.act_layer()))
        core.append(("pointwise", nn.Conv2d(c_in, self.c_out, 1, bias=_bias(spec, ctx))))
        _named_sequential(self, _wrap(spec.order, core, c_in, self.c_out, ctx))

    @staticmethod
    def complexity(spec: S.Sep, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        c_out = ctx.channels(spec.out, c)
        (kh, kw), (ph, pw), s = as_pair(spec.kernel), _padding(spec), stride_at(spec, first)
        h_out, w_out = conv_size(h, kh, s, ph), conv_size(w, kw, s, pw)
        _check_fits(h, w, h_out, w_out, s, f"{kh}x{kw}")
        if ctx.has_norm(spec.order) and spec.order.index("n") < spec.order.index("c"):
            ctx.norm_cost(cost, c, h, w)
        cost.conv(c, c, kh, kw, c, False, h_out, w_out)
        if "n" in spec.mid:
            ctx.norm_cost(cost, c, h_out, w_out)
        cost.conv(c, c_out, 1, 1, 1, _bias(spec, ctx), h_out, w_out)
        if ctx.has_norm(spec.order) and spec.order.index("n") > spec.order.index("c"):
            ctx.norm_cost(cost, c_out, h_out, w_out)
        return c_out, h_out, w_out


def _pool_padding(spec: S.Pool) -> int:
    return (spec.kernel - 1) // 2 if spec.padding is None else spec.padding


class Pool(nn.Sequential):
    def __init__(self, spec: S.Pool, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.c_out = c_in
        args = (spec.kernel, stride_at(spec, first), _pool_padding(spec))
        pool = (nn.MaxPool2d(*args, ceil_mode=spec.ceil) if spec.type == "max" else
                nn.AvgPool2d(*args, ceil_mode=spec.ceil, count_include_pad=spec.count_include_pad))
        self.add_module("pool", pool)

    @staticmethod
    def complexity(spec: S.Pool, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        args = (spec.kernel, stride_at(spec, first), _pool_padding(spec), spec.ceil)
        h_out, w_out = pool_size(h, *args), pool_size(w, *args)
        _check_fits(h, w, h_out, w_out, args[1], f"{spec.kernel}x{spec.kernel} pool")
        return c, h_out, w_out  # fvcore counts no pooling FLOPs


class AdaptivePool(nn.Sequential):
    def __init__(self, spec: S.AdaptivePool, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.c_out = c_in
        cls = nn.AdaptiveAvgPool2d if spec.type == "avg" else nn.AdaptiveMaxPool2d
        self.add_module("pool", cls(spec.output))

    @staticmethod
    def complexity(spec: S.AdaptivePool, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        if spec.type == "avg":
            cost.flops += c * h * w
        return c, spec.output, spec.output


class Norm(nn.Sequential):
    def __init__(self, spec: S.Norm, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.c_out = c_in
        self.add_module("norm", ctx.norm_layer(c_in))

    @staticmethod
    def complexity(spec: S.Norm, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        ctx.norm_cost(cost, c, h, w)
        return c, h, w


class Identity(nn.Sequential):
    def __init__(self, spec: S.Identity, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.c_out = c_in

    @staticmethod
    def complexity(spec: S.Identity, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        return c, h, w


class Act(nn.Sequential):
    def __init__(self, spec: S.Act, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.c_out = c_in
        self.add_module("act", ctx.act_layer())

    @staticmethod
    def complexity(spec: S.Act, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        return c, h, w


class Dropout(nn.Sequential):
    def __init__(self, spec: S.Dropout, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.c_out = c_in
        self.add_module("dropout", nn.Dropout(spec.p))

    @staticmethod
    def complexity(spec: S.Dropout, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        return c, h, w


def split_sizes(split: list | None, c: int, n: int) -> list[int]:
    """Each branch's input channels: all c, or its slice of them (see schema._check_split)."""
    if split is None:
        return [c] * n
    if isinstance(split[0], float):
        rest = [int(c * f) for f in split[1:]]
        sizes = [c - sum(rest)] + rest
    else:
        sizes = list(split)
        if sum(sizes) != c:
            raise GenotypeError("split", f"the slices {sizes} add up to {sum(sizes)} channels, but the input "
                                f"has {c}; make them add up, or give fractions")
    for i, size in enumerate(sizes):
        if size < 1:
            raise GenotypeError("split", f"leaves branch {i} no channels of the {c}; give it a larger share")
    return sizes


BRANCHES = S.Branches  # looked up once per op on the search's hot path


class Branches(nn.Module):
    """Parallel branches merged by concat or sum; also the body of every block.
    With `split`, each branch reads its own slice of the input channels."""

    def __init__(self, spec: S.Branches, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        self.concat = spec.merge == "concat"
        sizes = split_sizes(spec.split, c_in, len(spec.branches))
        self.split = sizes if spec.split is not None else None
        self.branches = nn.ModuleList(Branch(ops, c, ctx, first) for ops, c in zip(spec.branches, sizes))
        outs = [b.c_out for b in self.branches]
        self.c_out = sum(outs) if self.concat else outs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = torch.split(x, self.split, dim=1) if self.split else [x] * len(self.branches)
        if len(self.branches) == 1:
            return self.branches[0](xs[0])
        ys = [branch(x) for branch, x in zip(self.branches, xs)]
        return torch.cat(ys, dim=1) if self.concat else torch.stack(ys).sum(0)

    @staticmethod
    def complexity(spec: S.Branches, c: int, h: int, w: int, t, first: bool = True, path: str = "",
                   merge: str = ""):
        """`t` is the trace (space.trace); `path` the field the branches hang from, `path + merge` their merge's."""
        if len(spec.branches) == 1 and spec.split is None:
            try:
                return Branch.complexity(spec.branches[0], c, h, w, t, first,
                                         f"{path}.branches[0]" if t.records else path)
            except GenotypeError as e:
                raise e.within("branches[0]") from None
        sizes = split_sizes(spec.split, c, len(spec.branches))
        merge_path = path + merge
        if spec.split is not None:
            t.step("split", f"{merge_path}.split", (c, h, w), (c, h, w), role="split", sizes=sizes)
        records, src, shapes, ends = t.records, t.cursor(), [], []
        for i, (ops, c_i) in enumerate(zip(spec.branches, sizes)):
            if records:  # each branch reads the same input; a summing trace has no edges to draw
                t.goto(src)
            try:
                shapes.append(Branch.complexity(ops, c_i, h, w, t, first,
                                                f"{path}.branches[{i}]" if records else path))
            except GenotypeError as e:
                raise e.within(f"branches[{i}]") from None
            if records:
                ends.append(t.cursor())
        merged = merge_shapes(shapes, spec.merge, "branches")
        if len(shapes) > 1 and records:
            t.join("concat" if spec.merge == "concat" else "add", merge_path, (c, h, w), merged, ends,
                   role="branches", inputs=len(shapes))
        return merged


def merge_shapes(shapes: list[tuple[int, int, int]], merge: str, field: str) -> tuple[int, int, int]:
    c0, h0, w0 = shapes[0]
    for i, (c, h, w) in enumerate(shapes[1:], 1):
        if (h, w) != (h0, w0):
            raise GenotypeError(f"{field}[{i}]", f"gives a {h}x{w} map but {field}[0] gives {h0}x{w0}; "
                                "branches must agree in size to merge")
        if merge == "sum" and c != c0:
            raise GenotypeError(f"{field}[{i}]", f"gives {c} channels but {field}[0] gives {c0}; "
                                "a sum merge needs equal channels (or use merge: concat)")
    return (sum(s[0] for s in shapes) if merge == "concat" else c0), h0, w0


class Branch(nn.Sequential):
    """A sequence of ops; its modules are named by op type and position."""

    def __init__(self, ops: list, c_in: int, ctx: Context, first: bool = True):
        super().__init__()
        c = c_in
        for i, spec in enumerate(ops):
            op = OPS[type(spec)](spec, c, ctx, first)
            self.add_module(f"{i}_{spec.op}", op)
            c = op.c_out
        self.c_out = c

    @staticmethod
    def complexity(ops: list, c: int, h: int, w: int, t, first: bool = True, path: str = ""):
        ctx, records = t.ctx, t.records
        for i, spec in enumerate(ops):
            try:
                if spec.__class__ is BRANCHES:
                    c, h, w = Branches.complexity(spec, c, h, w, t, first, f"{path}[{i}]" if records else path)
                    if records:
                        t.goto(t.cursor(), "data")
                elif records:
                    c, h, w = t.op(spec, c, h, w, first, f"{path}[{i}]")
                else:  # the search's hot path: a summing trace needs no path, so skip t.op and its f-string
                    c, h, w = OPS[spec.__class__].complexity(spec, c, h, w, ctx, t, first)
            except GenotypeError as e:
                raise e.within(f"[{i}]") from None
        return c, h, w


def stride_of(ops: list, first: bool = True) -> int:
    """The product of the strides along a branch (for a residual shortcut)."""
    stride = 1
    for spec in ops:
        if isinstance(spec, S.Branches):
            stride *= stride_of(spec.branches[0], first)
        elif first and hasattr(spec, "stride"):
            stride *= spec.stride
    return stride


OPS = {S.Conv: Conv, S.Sep: Sep, S.Pool: Pool, S.AdaptivePool: AdaptivePool, S.Norm: Norm,
       S.Identity: Identity, S.Act: Act, S.Dropout: Dropout, S.Branches: Branches}
