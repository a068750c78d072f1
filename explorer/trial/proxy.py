"""Proxies: a genotype adapted to the small proxy data it is trained on.

The rules, applied in this order, each tested in tests/test_proxy.py:
1. depth: every block's `repeat` is capped at `depth` (--proxy-depth);
2. stem: the stem's strides become 1, since proxy images are already small;
3. strides: where a block would shrink the map below MIN_SIZE pixels (or make it
   vanish), its strides become 1 and its convs and pools pad to keep the size
   (an even pool window, which can't, shrinks to 1x1);
   in both rules a patchify conv (even kernel k, stride k, no padding), which is
   legal only with its stride, becomes a padded (k - 1) x (k - 1) conv: 4x4/4 -> 3x3, 2x2/2 -> 1x1;
4. width: the width multiplier is scaled by `width` (--proxy-width); where that
   leaves a grouped conv's channels indivisible by its groups, the groups are
   halved until they divide.
The deployed network (the study's resolution, 1000 classes) is what the budget
prices; the proxy is only what gets trained.
"""
from __future__ import annotations

from typing import Any

from space import schema as S
from space.errors import GenotypeError
from space.network import complexity, trace

MIN_SIZE = 2


def make_proxy(g: S.Genotype, resolution: int, width: float = 1.0, depth: int | None = None,
               in_channels: int = 3, classes: int = 10) -> S.Genotype:
    g = g.model_copy(update={"classes": classes, "resolution": resolution})
    if depth is not None:
        g = _cap_depth(g, depth)
    g = g.model_copy(update={"stem": _unstride(g.stem, keep_padding=True)})
    g = _clamp_strides(g, resolution, in_channels)
    if width != 1.0:
        g = _fit_groups(S.dump(g) | {"width": g.width * width}, in_channels)
    return g


def _cap_depth(g: S.Genotype, depth: int) -> S.Genotype:
    stages = [s.model_copy(update={"blocks": [b.model_copy(update={"repeat": min(b.repeat, depth)}) for b in s.blocks]})
              for s in g.stages]
    return g.model_copy(update={"stages": stages})


def _unstride(ops: list, keep_padding: bool = False) -> list:
    """The same ops with stride 1 and, unless kept, size-preserving padding."""
    out = []
    for op in ops:
        if isinstance(op, S.Branches):
            op = op.model_copy(update={"branches": [_unstride(b, keep_padding) for b in op.branches]})
        elif isinstance(op, (S.Conv, S.Sep, S.Pool)):
            update: dict[str, Any] = {"stride": 1}
            if not isinstance(op, S.Pool) and isinstance(op.kernel, int) and op.kernel % 2 == 0:
                update.update(kernel=op.kernel - 1, padding=None)  # patchify: see rule 3
            elif not keep_padding:
                update["padding"] = None
                if isinstance(op, S.Pool):
                    update["ceil"] = False
                    if op.kernel % 2 == 0:
                        update["kernel"] = 1  # an even window can't keep the size: the pool becomes a no-op
            op = op.model_copy(update=update)
        out.append(op)
    return out


def _unstride_block(block: S.Block) -> S.Block:
    return block.model_copy(update={"branches": [_unstride(b) for b in block.branches], "post": _unstride(block.post)})


def _clamp_strides(g: S.Genotype, resolution: int, in_channels: int) -> S.Genotype:
    """Rule 3 (and rule 2 where the stem alone is too much), from the input on: unstride the first part
    whose map the trace shows shrinking below MIN_SIZE or vanishing, then trace again."""
    done: set[str] = set()
    while (path := _next_to_unstride(g, resolution, in_channels, done)) is not None:
        done.add(path)
        if path == "stem":
            g = g.model_copy(update={"stem": _unstride(g.stem)})
            continue
        i, j = _block_at(g, path)
        stages = list(g.stages)
        blocks = list(stages[i].blocks)
        blocks[j] = _unstride_block(blocks[j])
        stages[i] = stages[i].model_copy(update={"blocks": blocks})
        g = g.model_copy(update={"stages": stages})
    return g


def _next_to_unstride(g: S.Genotype, resolution: int, in_channels: int, done: set[str]) -> str | None:
    """The path of the first part to unstride (None: none); a part unstrided once that still fails raises.
    Auxiliary heads are left out of the trace: they never decide the map sizes."""
    t = trace(_without_aux(g), resolution, in_channels=in_channels, partial=True)
    shape = t.shapes.get("stem")
    if shape is None:
        return _or_raise("stem", done, t.error)
    for i, stage in enumerate(g.stages):
        for j, block in enumerate(stage.blocks):
            path = f"stages[{i}].blocks[{j}]"
            out = t.shapes.get(path)
            if out is None or (path not in done and min(out[1:]) < min(MIN_SIZE, min(shape[1:]))):
                return _or_raise(path, done, t.error)
            shape = t.shapes.get(path if block.repeat == 1 else f"{path}#{block.repeat - 1}")
            if shape is None:
                raise t.error
    return None


def _or_raise(path: str, done: set[str], error: GenotypeError | None) -> str:
    if path in done:
        raise error
    return path


def _block_at(g: S.Genotype, path: str) -> tuple[int, int]:
    i, j = (int(part.split("[")[1].rstrip("]")) for part in path.split("."))
    return i, j


def _without_aux(g: S.Genotype) -> S.Genotype:
    stages = [s.model_copy(update={"blocks": [b.model_copy(update={"aux": None}) for b in s.blocks]})
              for s in g.stages]
    return g.model_copy(update={"stages": stages})


def _fit_groups(doc: dict, in_channels: int) -> S.Genotype:
    """Halve the groups that a narrower network no longer divides."""
    for _ in range(64):
        g = S.load(doc)
        try:
            complexity(g, in_channels=in_channels, breakdown=False)
            return g
        except GenotypeError as e:
            if not e.path.endswith(".groups"):
                raise
            node = _at(doc, e.path[: -len(".groups")])
            if not isinstance(node.get("groups", 1), int):  # depthwise: a fraction `out` always fits it
                raise
            node["groups"] = max(1, node.get("groups", 1) // 2)
    raise GenotypeError("width", "the proxy width leaves no grouping that fits")


def _at(doc: Any, path: str) -> Any:
    """The node of `doc` at a field path such as `stages[1].blocks[0].branches[0][2]`."""
    node = doc
    for part in path.replace("]", "").replace("[", ".").split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    return node
