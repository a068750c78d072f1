"""The classifier head: the head's ops, an adaptive pool, optional hidden layers, the classifier.

Its own module so that a stage can attach an auxiliary head (GoogLeNet's) to a
block without being handed a constructor from above.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from . import schema as S
from .cost import NORM_FLOPS
from .errors import GenotypeError
from .ops import Branch, Context
from .trace import Recorder, Trace


class Head(nn.Module):
    """ops -> adaptive pool -> flatten -> [linear, act, (layer norm), dropout] per hidden layer -> dropout
    -> classifier. The map it flattens has the shape the trace recorded after the ops, at `path`.ops."""

    def __init__(self, spec: S.Head, c_in: int, ctx: Context, num_classes: int, trace: Recorder, path: str):
        super().__init__()
        self.ops = Branch(spec.ops, c_in, ctx)
        c, h, w = trace.shapes[f"{path}.ops"]
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
    def complexity(spec: S.Head, c: int, h: int, w: int, t: Trace, num_classes: int, path: str) -> None:
        records = t.records  # a summing trace needs no paths
        try:
            c, h, w = Branch.complexity(spec.ops, c, h, w, t, True, f"{path}.ops" if records else path)
        except GenotypeError as e:
            raise e.within("ops") from None
        if records:
            t.shape(f"{path}.ops", (c, h, w))
        if spec.pool != "none":
            c, h, w = t.op(_adaptive_pool(spec.pool, spec.size), c, h, w, True, f"{path}.pool" if records else path)
        n = c * h * w
        for k, width in enumerate(spec.hidden):
            _linear_complexity(n, width, t, f"{path}.hidden[{k}]", "hidden")
            t.step("act", f"{path}.hidden[{k}]", (width, 1, 1), (width, 1, 1), act=t.ctx.act)
            if spec.norm != "none":
                mark = t.mark()
                t.norm(width, 1, 1, NORM_FLOPS[spec.norm])
                t.step("norm", f"{path}.norm", (width, 1, 1), (width, 1, 1), mark, norm=spec.norm)
            t.step("dropout", f"{path}.dropout", (width, 1, 1), (width, 1, 1), p=spec.dropout)
            n = width
        if not spec.hidden and spec.dropout and t.records:  # dropout is free: only a recorder needs it
            t.step("dropout", f"{path}.dropout", (n, 1, 1), (n, 1, 1), p=spec.dropout)
        _linear_complexity(n, num_classes, t, path, "classifier")


@lru_cache(maxsize=None)
def _adaptive_pool(pool: str, size: int) -> S.AdaptivePool:
    """The head's pool as the op it is, so the trace prices it with AdaptivePool.complexity
    (made once per kind and size: validating a spec is slow on the search's hot path)."""
    return S.AdaptivePool(op="adaptive_pool", type=pool, output=size)


def _linear_complexity(n_in: int, n_out: int, t: Trace, path: str, role: str) -> None:
    mark = t.mark()
    t.linear(n_in, n_out)
    if t.records:
        t.step("linear", path, (n_in, 1, 1), (n_out, 1, 1), mark, role=role)


class _PreLogits(nn.Identity):
    """What a reset to 0 classes leaves in the classifier's place: remembers its width for a later reset."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
