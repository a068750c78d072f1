"""Parse compute budgets such as `2GFLOPs` and parameter caps such as `5M`.

FLOPs are multiply-adds (the fvcore / ResNet-paper convention).
"""
from __future__ import annotations

import math
import re

from .errors import UserError

LIMIT = 1e18  # the largest budget or cap: storages keep them as 64-bit integers

_PREFIX = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9, "t": 1e12, "T": 1e12}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?"
_FLOPS = re.compile(rf"^\s*{_NUMBER}\s*([kKmMgGtT]?)\s*(?:FLOPS?|FLOPs|flops?|F|MACs?|macs?)?\s*$")
_COUNT = re.compile(rf"^\s*{_NUMBER}\s*([kKmMgGtT]?)\s*(?:params?)?\s*$")

FLOP_FORMS = "2GFLOPs, 2GF, 600MFLOPs, 600M, 2e9 (multiply-adds)"
COUNT_FORMS = "5M, 500k, 2.5e6"


def _parse(text: str, pattern: re.Pattern, what: str, forms: str) -> int:
    m = pattern.match(str(text))
    if not m:
        raise UserError(f"{what}: can't read '{text}'; write it like {forms}")
    number, exponent, prefix = m.groups()
    try:
        value = float(number) * 10.0 ** int(exponent or 0) * _PREFIX[prefix]
    except (OverflowError, ValueError):  # an exponent too large for a float, or too long to read
        value = math.inf
    if value <= 0:
        raise UserError(f"{what}: '{text}' must be positive; write it like {forms}")
    if value > LIMIT:
        raise UserError(f"{what}: '{text}' is out of range; the most is {LIMIT:.0e}")
    return int(round(value))


def parse_flops(text: str, what: str = "--budget") -> int:
    return _parse(text, _FLOPS, what, FLOP_FORMS)


def parse_count(text: str, what: str = "--max-params") -> int:
    return _parse(text, _COUNT, what, COUNT_FORMS)


def format_flops(flops: float) -> str:
    """A human figure such as `2.00 GFLOPs`."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {prefix}FLOPs"
    return f"{flops:.0f} FLOPs"
