"""Blocks and stages: branches merged, then a residual, highway or dense skip.

One Block spec with `repeat: n` becomes n modules; only the first keeps the
strides, and only it may change the shape, so a shortcut projection appears
where the shape changes and identity elsewhere, as in ResNet.

A highway block (Srivastava et al. 2015) mixes its branch H(x) and its input:
T * H(x) + (1 - T) * x, with a gate T = sigmoid(1x1 conv of x, with a bias) per
channel and position. ResNet's add is the ungated special case. The gate's bias
starts at HIGHWAY_GATE_BIAS, so T is about 0.12 and a fresh block passes its
input on almost unchanged, as the paper recommends for deep highway nets.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from . import schema as S
from .cost import conv_size
from .errors import GenotypeError
from .head import Head
from .ops import Branch, Branches, Context, stride_of
from .trace import Recorder, Shape, Trace

HIGHWAY_GATE_BIAS = -2.0  # Srivastava et al. suggest -1 to -3; sigmoid(-2) = 0.12


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample, then zero-pad the new channels. No parameters."""

    def __init__(self, stride: int, extra: int):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra))


def _shortcut(spec: S.Block, c_in: int, c_out: int, stride: int, ctx: Context) -> nn.Module:
    if c_in == c_out and stride == 1:
        return nn.Identity()
    if spec.shortcut == "pad":
        return PadShortcut(stride, c_out - c_in)
    layers = [("conv", nn.Conv2d(c_in, c_out, 1, stride, bias=False))]
    if spec.shortcut == "conv-norm":
        layers.append(("norm", ctx.norm_layer(c_out)))
    return nn.Sequential(OrderedDict(layers))


def _shortcut_complexity(spec: S.Block, shape: Shape, out: Shape, stride: int, t: Trace, path: str) -> None:
    """The projection where the shape changes (none where it doesn't)."""
    c, c_out, h_out, w_out = shape[0], *out
    if c == c_out and stride == 1:
        return
    if spec.shortcut == "pad":
        if c_out < c:
            raise GenotypeError("shortcut", f"pad can't shrink {c} to {c_out} channels; use conv-norm")
        t.step("shortcut", f"{path}.shortcut", shape, out, stride=stride, role="shortcut", shortcut="pad")
        return
    mark = t.mark()
    t.conv(c, c_out, 1, 1, 1, False, h_out, w_out)
    norm = spec.shortcut == "conv-norm" and t.ctx.norm != "none"
    if not t.records:  # the hot path: the conv's cost, and the norm's
        if norm:
            t.ctx.norm_cost(t, c_out, h_out, w_out)
        return
    t.step("conv", f"{path}.shortcut", shape, out, mark, kernel=1, stride=stride, groups=1, role="shortcut",
           order="c")
    if norm:
        t.goto(t.cursor(), "shortcut")
        mark = t.mark()
        t.ctx.norm_cost(t, c_out, h_out, w_out)
        t.step("norm", f"{path}.shortcut", out, out, mark, role="shortcut", norm=t.ctx.norm)


def _gate(c_in: int, c_out: int, stride: int) -> nn.Conv2d:
    """A highway gate's pre-activation: a 1x1 conv of the block's input, its bias starting negative."""
    gate = nn.Conv2d(c_in, c_out, 1, stride, bias=True)
    nn.init.constant_(gate.bias, HIGHWAY_GATE_BIAS)
    return gate


def _gate_complexity(shape: Shape, out: Shape, t: Trace, path: str) -> None:
    """The gate's 1x1 conv; its sigmoid and the mixing are free (fvcore)."""
    mark = t.mark()
    t.conv(shape[0], out[0], 1, 1, 1, True, out[1], out[2])
    t.step("conv", f"{path}.gate", shape, out, mark, kernel=1, groups=1, role="gate", order="c")


class StochasticBranch(nn.Module):
    """Stochastic depth (Huang et al. 2016) on one residual branch, drawn per batch as in the paper: in
    training the block skips its branch with probability 1 - survival; in evaluation the branch is scaled
    by survival, its expected contribution. Deciding before the branch runs spares its compute (and its
    norm statistics) when it is dropped. space.network.stochastic_depth sets the survivals.

    Not timm's DropPath, whose argument is the drop probability and which drops per sample, rescaling
    in training rather than in evaluation; hence another name."""

    def __init__(self, survival: float = 1.0):
        super().__init__()
        self.survival = survival

    def skips(self) -> bool:
        return self.training and self.survival < 1.0 and float(torch.rand(())) >= self.survival

    def scale(self) -> float:
        return 1.0 if self.training else self.survival

    def bypass(self, shortcut: torch.Tensor, act: nn.Module | None) -> torch.Tensor:
        """The block's output without its branch: what it would give for a zero branch."""
        return shortcut if act is None else act(shortcut)

    def extra_repr(self) -> str:
        return f"survival={self.survival:g}"


class Lesion(nn.Module):
    """A deleted residual branch (Veit et al. 2016) in the block's StochasticBranch place, see `lesioned`: the
    block returns shortcut(x), exactly its input x for an identity shortcut (no activation after it)."""
    survival = 0.0

    def skips(self) -> bool:
        return True

    def bypass(self, shortcut: torch.Tensor, act: nn.Module | None) -> torch.Tensor:
        return shortcut


@contextmanager
def lesioned(blocks: Iterable["Block"]) -> Iterator[None]:
    """The residual blocks' branches deleted while inside (a test-time lesion), restored afterwards."""
    blocks = list(blocks)
    if any(block.skip != "residual" for block in blocks):
        raise ValueError("only residual blocks can be deleted: nothing else carries the input around the branch")
    kept = [block.stochastic_branch for block in blocks]
    for block in blocks:
        block.stochastic_branch = Lesion()
    try:
        yield
    finally:
        for block, stochastic_branch in zip(blocks, kept):
            block.stochastic_branch = stochastic_branch


class Block(Branches):
    """Branches (a Block spec has `branches` and `merge` too), then post ops and the skip."""

    def __init__(self, spec: S.Block, c_in: int, ctx: Context, first: bool = True):
        super().__init__(spec, c_in, ctx, first)
        self.post = Branch(spec.post, self.c_out, ctx, first)
        c = self.post.c_out
        self.skip, self.scale = spec.skip, spec.scale
        self.gamma = None if spec.layer_scale is None else nn.Parameter(torch.full((c,), spec.layer_scale))
        if spec.skip in ("residual", "highway"):
            stride = stride_of(spec.branches[0] + spec.post, first)
            self.shortcut = _shortcut(spec, c_in, c, stride, ctx)
            if spec.skip == "highway":
                self.gate = _gate(c_in, c, stride)
            else:
                self.stochastic_branch = StochasticBranch()
        elif spec.skip == "dense":
            c += c_in
        self.act = ctx.act_layer() if spec.act else None
        self.c_out = c
        self.aux = None  # attached by the stage to the last repetition

    @property
    def survival(self) -> float:
        """The probability the branch runs in a training step (1 without a residual skip)."""
        return self.stochastic_branch.survival if self.skip == "residual" else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip == "residual" and self.stochastic_branch.skips():
            return self.stochastic_branch.bypass(self.shortcut(x), self.act)
        y = self.post(super().forward(x))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        if self.skip == "residual":
            scale = self.scale * self.stochastic_branch.scale()
            y = self.shortcut(x) + (y if scale == 1.0 else y * scale)
        elif self.skip == "highway":
            t = torch.sigmoid(self.gate(x))
            y = t * (y if self.scale == 1.0 else y * self.scale) + (1 - t) * self.shortcut(x)
        elif self.skip == "dense":
            y = torch.cat([x, y], 1)
        return self.act(y) if self.act is not None else y

    @staticmethod
    def complexity(spec: S.Block, c: int, h: int, w: int, t: Trace, first: bool = True, path: str = ""):
        """Mirrors the constructor: branches, post, layer scale, then the skip and the act."""
        src = t.cursor() if t.records else None  # where the skip reads from (a recorder's edges only)
        out = c_out, h_out, w_out = Branches.complexity(spec, c, h, w, t, first, path, ".merge")
        if spec.post:
            try:
                out = c_out, h_out, w_out = Branch.complexity(spec.post, *out, t, first, f"{path}.post")
            except GenotypeError as e:
                raise e.within("post") from None
        if spec.layer_scale is not None:
            mark = t.mark()
            t.params += c_out  # gamma; its multiply is free (fvcore)
            t.step("scale", f"{path}.layer_scale", out, out, mark, role="layer_scale", init=spec.layer_scale)
        if spec.skip == "dense":
            if (h_out, w_out) != (h, w):
                raise GenotypeError("skip", f"a dense block must keep the {h}x{w} map size (got {h_out}x{w_out}); "
                                    "downsample in a transition block")
            out = (c + c_out, h, w)
            if t.records:
                t.join("concat", f"{path}.skip", (c, h, w), out, [src, t.cursor()], ["dense", "data"],
                       role="dense", inputs=2)
        elif spec.skip in ("residual", "highway"):
            stride = stride_of(spec.branches[0] + spec.post, first)
            if (h_out, w_out) != (conv_size(h, 1, stride, 0), conv_size(w, 1, stride, 0)):
                raise GenotypeError("skip", f"the branch maps {h}x{w} to {h_out}x{w_out}, which a stride-{stride} "
                                    "shortcut can't follow; pad the convs to keep the size")
            if t.records:
                _recorded_skip(spec, (c, h, w), out, stride, t, path, src)
            else:  # the search's hot path: the same costs, no edges to draw
                _shortcut_complexity(spec, (c, h, w), out, stride, t, path)
                if spec.skip == "highway":
                    _gate_complexity((c, h, w), out, t, path)
        if spec.act and t.records:  # free, so only a recorder needs to see it
            t.step("act", f"{path}.act", out, out, act=t.ctx.act)
        return out


def _recorded_skip(spec: S.Block, shape: Shape, out: Shape, stride: int, t: Recorder, path: str, src) -> None:
    """The residual add or highway mix, reading the branch's end and, over shortcut edges, the block's
    input `src` through the shortcut projection (and the gate)."""
    y = t.cursor()
    t.goto(src, "shortcut")
    _shortcut_complexity(spec, shape, out, stride, t, path)
    short = t.cursor()
    if spec.skip == "highway":
        t.goto(src, "shortcut")
        _gate_complexity(shape, out, t, path)
        t.join("gate", f"{path}.skip", out, out, [t.cursor(), short, y], ["shortcut", "shortcut", "data"],
               role="highway", inputs=3, scale=spec.scale)
    else:
        t.join("add", f"{path}.skip", out, out, [short, y], ["shortcut", "data"], role="residual", inputs=2,
               scale=spec.scale)


class Stage(nn.Sequential):
    """A stage's blocks, each Block spec unrolled `repeat` times; an auxiliary head on the last repetition
    of a block that asks for one, built at the shape the trace recorded there."""

    def __init__(self, spec: S.Stage, c_in: int, ctx: Context, num_classes: int, trace: Recorder, path: str):
        super().__init__()
        c = c_in
        for i, block_spec in enumerate(spec.blocks):
            for r in range(block_spec.repeat):
                block = Block(block_spec, c, ctx, first=r == 0)
                c = block.c_out
                self.add_module(f"block{i}" if block_spec.repeat == 1 else f"block{i}_{r}", block)
            if block_spec.aux is not None:
                block.aux = Head(block_spec.aux, c, ctx, num_classes, trace, f"{path}.blocks[{i}].aux")
        self.c_out = c

    @staticmethod
    def complexity(spec: S.Stage, c: int, h: int, w: int, t: Trace, num_classes: int, path: str) -> Shape:
        shape = (c, h, w)
        for i, block_spec in enumerate(spec.blocks):
            block_path = f"{path}.blocks[{i}]" if t.records else path  # a summing trace needs no paths
            try:
                shape = Block.complexity(block_spec, *shape, t, True, block_path)
                if t.records:
                    t.shape(block_path, shape)
                if block_spec.repeat > 1:
                    shape = _repeat_complexity(block_spec, shape, t, block_path)
                if block_spec.aux is not None:
                    _aux_complexity(block_spec.aux, shape, t, num_classes, f"{block_path}.aux")
            except GenotypeError as e:
                raise e.within(f"blocks[{i}]") from None
        return shape


def _repeat_complexity(spec: S.Block, shape: Shape, t: Trace, path: str) -> Shape:
    """Repetitions 2..n, stride 1. A summing trace counts a shape-keeping repetition once and multiplies
    (it costs the same each time); a recorder walks each one, `path#r`, as the graph shows them."""
    start = 1
    if not t.records:
        flops, params, acts = t.flops, t.params, t.acts
        out = Block.complexity(spec, *shape, t, False, path)
        if out == shape:
            more = spec.repeat - 2
            t.flops += (t.flops - flops) * more
            t.params += (t.params - params) * more
            t.acts += (t.acts - acts) * more
            return out
        shape, start = out, 2
    for r in range(start, spec.repeat):
        shape = Block.complexity(spec, *shape, t, False, f"{path}#{r}")
        t.shape(f"{path}#{r}", shape)
    return shape


def _aux_complexity(spec: S.Head, shape: Shape, t: Trace, num_classes: int, path: str) -> None:
    """An auxiliary head reads the block's output over an `aux` edge and only trains: its params count,
    its FLOPs and activations don't (an eval-mode network skips it), so they are taken back out."""
    flops, acts, back = t.flops, t.acts, t.cursor()
    t.goto(back, "aux")
    t.aux = True
    try:
        Head.complexity(spec, *shape, t, num_classes, path)
    except GenotypeError as e:
        raise e.within("aux") from None
    t.aux = False
    t.flops, t.acts = flops, acts
    t.goto(back)
