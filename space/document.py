"""Reading genotype and space documents within stated limits.

A document is refused in one line, before it can cost much, when it is not
UTF-8 text, larger than MAX_BYTES, nested deeper than MAX_DEPTH, holds more
than MAX_NODES values once YAML aliases are expanded (a "billion laughs"
document is tiny as text and huge as data), or holds a non-finite number.
The YAML is parsed by libyaml (`yaml.CSafeLoader`) where PyYAML has it, and
the nesting is measured from libyaml's event stream before any node is
built: both the C composer and the validator recurse once per level.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from .errors import GenotypeError, join

MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_NODES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSES = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def read_text(path: str | Path) -> str:
    """A document file's text, refused in one line (naming the file as given) if unreadable, too large
    or not UTF-8."""
    label, path = str(path), Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise GenotypeError(label, f"{path.stat().st_size:,} bytes; documents are limited to "
                                f"{MAX_BYTES:,} bytes")
        data = path.read_bytes()
    except OSError as e:
        raise GenotypeError(label, f"can't read it ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GenotypeError(label, f"isn't UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); "
                            "save it as UTF-8 YAML or JSON") from None


def parse_text(text: str) -> Any:
    """YAML (a superset of JSON) text to Python data, within the limits, with a one-line error."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise GenotypeError("document", f"{size:,} bytes; documents are limited to {MAX_BYTES:,} bytes")
    try:
        _measure(text)
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise GenotypeError(where, f"not valid YAML/JSON: {problem}") from None
    except GenotypeError:
        raise
    except ValueError as e:  # a value YAML resolves but Python can't hold: an int of 5000 digits, 2020-13-45
        reason = "a number is too long" if "digits" in str(e) else str(e).splitlines()[0].split(";")[0]
        raise GenotypeError("document", f"a value can't be read ({reason})") from None
    check_tree(doc)
    return doc


def _measure(text: str) -> None:
    """Depth and node count of the document as data (aliases expanded), from libyaml's events alone."""
    stack = [[0, 0]]  # per open collection: [nodes inside, deepest level below]
    anchors: dict[str, tuple[int, int]] = {}
    starts: list[str | None] = []
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, _OPENS):
            if len(stack) > MAX_DEPTH:
                raise GenotypeError("document", f"nested deeper than {MAX_DEPTH} levels; flatten it")
            stack.append([0, 0])
            starts.append(event.anchor)
        elif isinstance(event, _CLOSES):
            nodes, depth = stack.pop()
            anchor = starts.pop()
            if anchor:
                anchors[anchor] = (nodes + 1, depth + 1)
            _count(stack, nodes + 1, depth + 1)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                anchors[event.anchor] = (1, 0)
            _count(stack, 1, 0)
        elif isinstance(event, yaml.AliasEvent):
            _count(stack, *anchors.get(event.anchor, (1, 0)))


def _count(stack: list, nodes: int, depth: int) -> None:
    top = stack[-1]
    top[0] += nodes
    top[1] = max(top[1], depth)
    if sum(frame[0] for frame in stack) > MAX_NODES:
        raise GenotypeError("document", f"more than {MAX_NODES:,} values once its aliases are expanded")
    if len(stack) - 1 + depth > MAX_DEPTH:
        raise GenotypeError("document", f"nested deeper than {MAX_DEPTH} levels; flatten it")


def check_tree(doc: Any, path: str = "") -> None:
    """Refuse Python data past the limits or with a non-finite number, naming the first offending field.

    Iterative, so a deep document can't exhaust the stack; shared sub-objects count once per reference."""
    todo = [(doc, path, 0)]
    nodes = 0
    while todo:
        node, where, depth = todo.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise GenotypeError(path or "document", f"more than {MAX_NODES:,} values")
        if isinstance(node, float) and not math.isfinite(node):
            raise GenotypeError(where, f"{node} is not a finite number")
        if isinstance(node, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                raise GenotypeError(path or "document", f"nested deeper than {MAX_DEPTH} levels; flatten it")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            todo.extend((v, join(where, k if isinstance(k, (str, int)) else str(k)), depth + 1)
                        for k, v in reversed(list(items)))
