"""A genotype's design axes: the properties search records and statistics group by.

`design_axes` is what every trial stores as user attrs (so a dashboard can filter
on family, depth, width, cardinality, growth, kernels, separable, residual);
`DERIVED` are the derived fields `explore stats --by` groups on.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from . import schema as S
from .errors import GenotypeError
from .network import complexity


def _ops(ops) -> list:
    """Every leaf op of a list of ops, inside nested Branches too."""
    out = []
    for op in ops:
        if isinstance(op, S.Branches):
            for branch in op.branches:
                out += _ops(branch)
        else:
            out.append(op)
    return out


def blocks(g: S.Genotype) -> list[S.Block]:
    return [b for s in g.stages for b in s.blocks]


def all_ops(g: S.Genotype) -> list:
    """Leaf ops of the stem, every block (branches and post), the head and the aux heads."""
    ops = _ops(g.stem) + _ops(g.head.ops)
    for b in blocks(g):
        for branch in b.branches:
            ops += _ops(branch)
        ops += _ops(b.post)
        if b.aux is not None:
            ops += _ops(b.aux.ops)
    return ops


def depth(g: S.Genotype) -> int:
    """Blocks stacked, counting repeats."""
    return sum(b.repeat for b in blocks(g))


def depth_bin(n: int) -> str:
    """Powers-of-two bins: 1-2, 3-4, 5-8, 9-16, ..."""
    hi = 2
    while n > hi:
        hi *= 2
    lo = hi // 2 + 1 if hi > 2 else 1
    return f"{lo}-{hi}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


DERIVED: dict[str, tuple[str, Callable[[S.Genotype], str]]] = {
    "family": ("the genotype's family (custom when it has none)", lambda g: g.family or "custom"),
    "residual": ("any block with a residual skip", lambda g: _yes(any(b.skip == "residual" for b in blocks(g)))),
    "highway": ("any block with a highway (gated) skip", lambda g: _yes(any(b.skip == "highway" for b in blocks(g)))),
    "dense": ("any block with a dense (concatenating) skip", lambda g: _yes(any(b.skip == "dense" for b in blocks(g)))),
    "separable": ("any depthwise-separable conv", lambda g: _yes(any(isinstance(o, S.Sep) for o in all_ops(g)))),
    "preact": ("any conv whose order starts with the norm (pre-activation)",
               lambda g: _yes(any(isinstance(o, (S.Conv, S.Sep)) and o.order.startswith("n") for o in all_ops(g)))),
    "depth": ("blocks stacked, repeats counted, in powers-of-two bins", lambda g: depth_bin(depth(g))),
    "width": ("the width multiplier", lambda g: f"x{g.width:g}"),
}
FIELD_PATH = re.compile(r"^[A-Za-z_]\w*(\[\d+\]|\.[A-Za-z_]\w*)*$")


def design_axes(g: S.Genotype) -> dict[str, Any]:
    """A trial's design axes under stable names, stored as its user attrs so a dashboard can filter on them:
    family, depth (blocks stacked), width (channels out of the last stage), cardinality (the most groups of any
    grouped conv; a depthwise conv counts as separable instead), growth (channels a dense block adds; 0 without
    one), kernels (distinct conv kernels), separable and residual (any such op or block)."""
    convs = [o for o in all_ops(g) if isinstance(o, (S.Conv, S.Sep))]
    dense = [b for b in blocks(g) if b.skip == "dense"]
    return {"family": g.family or "custom", "depth": depth(g), "width": _last_channels(g),
            "cardinality": max([o.groups for o in convs if isinstance(o, S.Conv) and isinstance(o.groups, int)],
                               default=1),
            "growth": max([sum(_last_out(branch) for branch in b.branches) for b in dense], default=0),
            "kernels": ",".join(sorted({_kernel(o.kernel) for o in convs}, key=lambda k: (len(k), k))),
            "separable": any(isinstance(o, S.Sep) or o.groups == "depthwise" for o in convs),
            "residual": any(b.skip == "residual" for b in blocks(g))}


def _kernel(k) -> str:
    return f"{k[0]}x{k[1]}" if isinstance(k, tuple) else str(k)


def _last_out(branch: list) -> int:
    ops = [o for o in _ops(branch) if isinstance(o, (S.Conv, S.Sep)) and isinstance(o.out, int)]
    return ops[-1].out if ops else 0


def _last_channels(g: S.Genotype) -> int:
    try:
        return complexity(g).parts[-2].channels  # the last stage's row (the head's is last)
    except GenotypeError:
        return 0  # a draw too small for its own resolution; search rejects it before anything is stored
