"""Named genotypes: the classic CNNs as exact fixed points of the grammar.

A name -> constructor registry (as in timm). Each constructor returns a plain
genotype document; `named(name)` validates it.
"""
from __future__ import annotations

import difflib
import fnmatch
import warnings
from typing import Callable

from ..errors import GenotypeError
from ..schema import Genotype, load

REGISTRY: dict[str, Callable[[], dict]] = {}


def register(fn: Callable[[], dict]) -> Callable[[], dict]:
    """Register a constructor under its function's name; a name already taken is replaced, with a warning
    (as timm warns), so a second definition never shadows the first unnoticed."""
    if fn.__name__ in REGISTRY and REGISTRY[fn.__name__] is not fn:
        warnings.warn(f"named genotype '{fn.__name__}' is registered again: {fn.__module__}.{fn.__qualname__} "
                      f"replaces {REGISTRY[fn.__name__].__module__}.{REGISTRY[fn.__name__].__qualname__}",
                      stacklevel=2)
    REGISTRY[fn.__name__] = fn
    return fn


def names(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Registered names, filtered as timm.list_models does: a shell-style wildcard ('res*', '*inception*')
    and/or the genotype's family."""
    found = [n for n in REGISTRY if pattern is None or fnmatch.fnmatchcase(n, pattern)]
    if family is not None:
        found = [n for n in found if named(n).family == family]
    return found


def families() -> list[str]:
    return sorted({named(n).family for n in REGISTRY if named(n).family})


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


# Each registers its genotypes on import, in this order: the order `explore list` shows.
# isort: off
from . import resnet  # noqa: E402,F401
from . import vgg  # noqa: E402,F401
from . import densenet  # noqa: E402,F401
from . import xception  # noqa: E402,F401
from . import mobilenet  # noqa: E402,F401
from . import inception  # noqa: E402,F401
from . import metanext  # noqa: E402,F401
# isort: on
