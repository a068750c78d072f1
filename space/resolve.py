"""One entry point for "a genotype": a document, a registered name or a file.

Every function that takes a genotype (`build`, `complexity`, `to_graph`, the
CLI) goes through `load`, so `build("resnet50")`, `build("net.yaml")` and
`build(Path("net.yaml"))` work wherever a document does.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import schema as S
from .document import read_text
from .errors import GenotypeError
from .named import REGISTRY, named

SUFFIXES = (".yaml", ".yml", ".json")
ACCEPTED = ("a genotype is a mapping with stem, stages and head (or its YAML/JSON text), a registered name "
            "(`explore list`) or the path of a YAML/JSON file")
_NAME = re.compile(r"^[\w.-]+$")


def load(ref: Any) -> S.Genotype:
    """Validate `ref` into a Genotype: a Genotype, a dict, YAML/JSON text, a registered name or a path."""
    if isinstance(ref, (S.Genotype, dict)):
        return S.load(ref)
    if isinstance(ref, Path):
        return read(ref)
    if not isinstance(ref, str):
        raise GenotypeError("", f"{ACCEPTED}, not {type(ref).__name__}")
    if ref in REGISTRY:
        return named(ref)
    one_line = "\n" not in ref and not ref.lstrip().startswith(("{", "["))  # else YAML/JSON text
    if one_line and (ref.endswith(SUFFIXES) or _is_file(ref)):
        return read(Path(ref))
    if one_line and _NAME.match(ref):
        try:
            return named(ref)
        except GenotypeError as e:
            raise GenotypeError(e.path, f"{e.reason}; or give the path of a YAML/JSON file") from None
    doc = S.parse_text(ref)
    if not isinstance(doc, dict):
        raise GenotypeError("", f"{ACCEPTED}; got text that parses to a {type(doc).__name__}")
    return S.load(doc)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a path
        return False


def read(path: Path) -> S.Genotype:
    """A genotype file; its errors name the file first."""
    if not path.exists():
        raise GenotypeError(str(path), "no such file")
    text = read_text(path)  # within the size limit, and UTF-8, or one line naming the file
    try:
        doc = S.parse_text(text)
        if not isinstance(doc, dict):
            raise GenotypeError("", f"{ACCEPTED}; the file holds a {type(doc).__name__}")
        return S.load(doc)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e.path}" if e.path else str(path), e.reason) from None
