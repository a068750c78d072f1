"""One walk of a genotype: per op, its path, spec, input and output shapes and cost.

The walk is the composite complexity() methods (Branch, Branches, Block, Stage,
Head), each beside its constructor; they call every op's own complexity()
through a trace. `Trace` only sums, so `space.complexity` prices thousands of
genotypes a second; `Recorder` also keeps a `Step` per op, with the steps it
reads from, and the shape after each stem, block and stage: `space.to_graph`
turns the steps into nodes and edges, `build` reads its shapes from them, and the
proxy its map sizes. Both walk the same code, so the graph and the totals can't drift.
On the search's hot path the walk skips what only a recorder needs (edges, free
steps such as activations, path strings) under `if t.records`; the costs come
from the same calls either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cost import Cost
from .errors import GenotypeError
from .ops import OPS, Context

Shape = tuple[int, int, int]


@dataclass
class Step:
    """One op of the unrolled network. `spec` is the genotype's op, None for the structure around it
    (merges, skips, shortcuts, the head's layers); `sources` are the steps it reads from: (step index,
    or None for the network's input; edge kind: data, shortcut, dense or aux); `first` is False in a
    block's later repetitions, where strides are 1; `attrs` say more (role, scale, sizes, ...)."""
    type: str
    path: str
    stage: str | None
    spec: Any
    shape_in: Shape
    shape: Shape
    flops: int
    params: int
    acts: int
    sources: list[tuple[int | None, str]]
    first: bool = True
    aux: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)


class Trace(Cost):
    """A running total the walk adds into, with hooks that do nothing: the fast, summing trace."""
    __slots__ = ("ctx", "stage", "aux")
    records = False

    def __init__(self, ctx: Context):
        self.flops = self.params = self.acts = 0  # Cost's, set here: a stage makes one per repeated block
        self.ctx, self.stage, self.aux = ctx, None, False

    def op(self, spec, c: int, h: int, w: int, first: bool, path: str) -> Shape:
        """A leaf op: its own complexity(), added into the total."""
        return OPS[type(spec)].complexity(spec, c, h, w, self.ctx, self, first)

    def mark(self) -> Any:
        """The totals now, so a later step can claim what was added since (a recorder's business)."""

    def step(self, type: str, path: str, shape_in: Shape, shape: Shape, mark: Any = None, **attrs: Any) -> None:
        """Something other than a leaf op (a merge, a shortcut, a head layer), costing what was added since `mark`."""

    def cursor(self) -> Any:
        """Where the next step reads from: remember it before branching."""

    def goto(self, cursor: Any, kind: str | None = None) -> None:
        """Read the next step from `cursor` again (each branch from the same input), over a `kind` edge."""

    def join(self, type: str, path: str, shape_in: Shape, shape: Shape, ends: list, kinds: list | None = None,
             **attrs: Any) -> None:
        """A step that reads from several `ends` (cursors) over edges of `kinds` (all data if None): a merge."""

    def shape(self, path: str, shape: Shape) -> None:
        """The output shape of a composite (the stem, a block repetition, a stage, the head's ops)."""


class Recorder(Trace):
    """A trace that keeps a Step per op and the shapes of composites; slower, for graphs and builds."""
    __slots__ = ("steps", "shapes", "src", "kind", "error")
    records = True

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.steps: list[Step] = []
        self.shapes: dict[str, Shape] = {}
        self.src: int | None = None
        self.kind = "data"
        self.error: GenotypeError | None = None  # where a partial trace stopped (space.network.trace)

    def op(self, spec, c: int, h: int, w: int, first: bool, path: str) -> Shape:
        mark = self.mark()
        out = OPS[type(spec)].complexity(spec, c, h, w, self.ctx, self, first)
        self._add(spec.op, path, (c, h, w), out, mark, [(self.src, self.kind)], spec=spec, first=first)
        return out

    def mark(self) -> tuple[int, int, int]:
        return self.flops, self.params, self.acts

    def step(self, type: str, path: str, shape_in: Shape, shape: Shape, mark: Any = None, **attrs: Any) -> None:
        self._add(type, path, shape_in, shape, mark, [(self.src, self.kind)], **attrs)

    def cursor(self) -> tuple[int | None, str]:
        return self.src, self.kind

    def goto(self, cursor: tuple[int | None, str], kind: str | None = None) -> None:
        self.src, self.kind = cursor[0], kind or cursor[1]

    def join(self, type: str, path: str, shape_in: Shape, shape: Shape, ends: list, kinds: list | None = None,
             **attrs: Any) -> None:
        kinds = kinds or ["data"] * len(ends)
        self._add(type, path, shape_in, shape, None, [(end[0], kind) for end, kind in zip(ends, kinds)], **attrs)

    def shape(self, path: str, shape: Shape) -> None:
        self.shapes[path] = shape

    def _add(self, type: str, path: str, shape_in: Shape, shape: Shape, mark, sources: list,
             spec: Any = None, first: bool = True, **attrs: Any) -> None:
        flops, params, acts = (0, 0, 0) if mark is None else (self.flops - mark[0], self.params - mark[1],
                                                              self.acts - mark[2])
        if self.aux:  # auxiliary heads only train: their params count, their FLOPs and activations don't
            flops, acts = 0, 0
        self.steps.append(Step(type, path, self.stage, spec, shape_in, shape, flops, params, acts, sources,
                               first, self.aux, attrs))
        self.src, self.kind = len(self.steps) - 1, "data"
