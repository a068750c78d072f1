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

import torch
import torch.nn.functional as F
from torch import nn

from . import schema as S
from .cost import Cost, conv_size
from .errors import GenotypeError
from .ops import Branch, Branches, Context, stride_of


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


def _shortcut_complexity(spec: S.Block, c: int, c_out: int, stride: int, h_out: int, w_out: int,
                         ctx: Context, cost: Cost) -> None:
    if c == c_out and stride == 1:
        return
    if spec.shortcut == "pad":
        if c_out < c:
            raise GenotypeError("shortcut", f"pad can't shrink {c} to {c_out} channels; use conv-norm")
        return
    cost.conv(c, c_out, 1, 1, 1, False, h_out, w_out)
    if spec.shortcut == "conv-norm":
        ctx.norm_cost(cost, c_out, h_out, w_out)


def _gate(c_in: int, c_out: int, stride: int) -> nn.Conv2d:
    """A highway gate's pre-activation: a 1x1 conv of the block's input, its bias starting negative."""
    gate = nn.Conv2d(c_in, c_out, 1, stride, bias=True)
    nn.init.constant_(gate.bias, HIGHWAY_GATE_BIAS)
    return gate


def _gate_complexity(c: int, c_out: int, h_out: int, w_out: int, cost: Cost) -> None:
    cost.conv(c, c_out, 1, 1, 1, True, h_out, w_out)  # the sigmoid and the mixing are free (fvcore)


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
        elif spec.skip == "dense":
            c += c_in
        self.act = ctx.act_layer() if spec.act else None
        self.c_out = c
        self.aux = None  # attached by the stage to the last repetition
        # Residual blocks only. `lesioned` deletes the residual branch at test time (Veit et al. 2016):
        # the block returns shortcut(x), exactly x for an identity shortcut. `survival` is the stochastic
        # depth probability p_l (Huang et al. 2016): in training the whole branch is dropped for a batch
        # with probability 1 - p_l; in evaluation the branch is scaled by p_l. See space.network.stochastic_depth.
        self.lesioned = False
        self.survival = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip == "residual" and (self.lesioned or (
                self.training and self.survival < 1.0 and float(torch.rand(())) >= self.survival)):
            y = self.shortcut(x)  # the branch is deleted (lesion) or dropped for this batch (stochastic depth)
            return y if self.lesioned or self.act is None else self.act(y)
        y = self.post(super().forward(x))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        if self.skip == "residual":
            scale = self.scale if self.training else self.scale * self.survival
            y = self.shortcut(x) + (y if scale == 1.0 else y * scale)
        elif self.skip == "highway":
            t = torch.sigmoid(self.gate(x))
            y = t * (y if self.scale == 1.0 else y * self.scale) + (1 - t) * self.shortcut(x)
        elif self.skip == "dense":
            y = torch.cat([x, y], 1)
        return self.act(y) if self.act is not None else y

    @staticmethod
    def complexity(spec: S.Block, c: int, h: int, w: int, ctx: Context, cost: Cost, first: bool = True):
        c_out, h_out, w_out = Branches.complexity(spec, c, h, w, ctx, cost, first)
        if spec.post:
            try:
                c_out, h_out, w_out = Branch.complexity(spec.post, c_out, h_out, w_out, ctx, cost, first)
            except GenotypeError as e:
                raise e.within("post") from None
        if spec.skip == "dense":
            if (h_out, w_out) != (h, w):
                raise GenotypeError("skip", f"a dense block must keep the {h}x{w} map size (got {h_out}x{w_out}); "
                                    "downsample in a transition block")
            return c + c_out, h, w
        if spec.layer_scale is not None:
            cost.params += c_out  # gamma; its multiply is free (fvcore)
        if spec.skip in ("residual", "highway"):
            stride = stride_of(spec.branches[0] + spec.post, first)
            if (h_out, w_out) != (conv_size(h, 1, stride, 0), conv_size(w, 1, stride, 0)):
                raise GenotypeError("skip", f"the branch maps {h}x{w} to {h_out}x{w_out}, which a stride-{stride} "
                                    "shortcut can't follow; pad the convs to keep the size")
            _shortcut_complexity(spec, c, c_out, stride, h_out, w_out, ctx, cost)
            if spec.skip == "highway":
                _gate_complexity(c, c_out, h_out, w_out, cost)
        return c_out, h_out, w_out


class Stage(nn.Sequential):
    """A stage's blocks, each Block spec unrolled `repeat` times."""

    def __init__(self, spec: S.Stage, shape: tuple[int, int, int], ctx: Context, num_classes: int, make_head):
        super().__init__()
        for i, block_spec in enumerate(spec.blocks):
            for r in range(block_spec.repeat):
                block = Block(block_spec, shape[0], ctx, first=r == 0)
                shape = Block.complexity(block_spec, *shape, ctx, Cost(), r == 0)
                name = f"block{i}" if block_spec.repeat == 1 else f"block{i}_{r}"
                self.add_module(name, block)
            if block_spec.aux is not None:
                block.aux = make_head(block_spec.aux, shape, ctx, num_classes)
        self.shape = shape

    @staticmethod
    def complexity(spec: S.Stage, c: int, h: int, w: int, ctx: Context, cost: Cost, head_params):
        for i, block_spec in enumerate(spec.blocks):
            try:
                c, h, w = Block.complexity(block_spec, c, h, w, ctx, cost, True)
                if block_spec.repeat > 1:
                    c, h, w = _repeat_complexity(block_spec, c, h, w, ctx, cost)
                if block_spec.aux is not None:
                    try:
                        cost.params += head_params(block_spec.aux, c, h, w, ctx)  # aux heads only train
                    except GenotypeError as e:
                        raise e.within("aux") from None
            except GenotypeError as e:
                raise e.within(f"blocks[{i}]") from None
        return c, h, w


def _repeat_complexity(spec: S.Block, c: int, h: int, w: int, ctx: Context, cost: Cost):
    """Repetitions 2..n: a shape-keeping repetition costs the same each time, so count it once."""
    one = Cost()
    shape = Block.complexity(spec, c, h, w, ctx, one, False)
    if shape == (c, h, w):
        cost.add(one, spec.repeat - 1)
        return shape
    cost.add(one)
    for _ in range(spec.repeat - 2):
        shape = Block.complexity(spec, *shape, ctx, cost, False)
    return shape
