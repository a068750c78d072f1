"""Named genotypes: the classic CNNs as exact fixed points of the grammar.

A name -> constructor registry (as in timm). Each constructor returns a plain
genotype document; `named(name)` validates it.
"""
from __future__ import annotations

import difflib
from typing import Callable

from ..errors import GenotypeError
from ..schema import Genotype, load

REGISTRY: dict[str, Callable[[], dict]] = {}


def register(fn: Callable[[], dict]) -> Callable[[], dict]:
    REGISTRY[fn.__name__] = fn
    return fn


def names() -> list[str]:
    return list(REGISTRY)


def named(name: str) -> Genotype:
    if name not in REGISTRY:
        near = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f"did you mean {', '.join(near)}?" if near else "run `explore list` to see them"
        raise GenotypeError("name", f"unknown genotype '{name}'; {hint}")
    return load(REGISTRY[name]())


def conv(out, kernel=1, stride=1, **fields) -> dict:
    """Shorthand used by the constructors: a conv op document."""
    return dict(op="conv", out=out, kernel=kernel, stride=stride, **fields)


def pool(kernel=3, stride=2, type="max", **fields) -> dict:
    return dict(op="pool", type=type, kernel=kernel, stride=stride, **fields)


from . import resnet  # noqa: E402,F401  (registers on import)
from . import vgg  # noqa: E402,F401
from . import densenet  # noqa: E402,F401
from . import xception  # noqa: E402,F401
from . import mobilenet  # noqa: E402,F401
from . import inception  # noqa: E402,F401
from . import metanext  # noqa: E402,F401
