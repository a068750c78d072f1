"""Parse compute budgets such as `2GFLOPs` or `20ms` and parameter caps such as `5M`.

FLOPs are multiply-adds (the fvcore / ResNet-paper convention). A time budget is the latency of one
forward pass at batch 1 on the search's device, predicted by explorer.trial.latency.
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

_TIME = re.compile(rf"^\s*{_NUMBER}\s*(s|ms|us|µs)\s*$")
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
TIME_LIMIT_S = 86_400.0  # a day: the longest time budget

FLOP_FORMS = "2GFLOPs, 2GF, 600MFLOPs, 600M, 2e9 (multiply-adds)"
COUNT_FORMS = "5M, 500k, 2.5e6"
TIME_FORMS = "20ms, 1.5s, 800us"


def _quoted(text) -> str:
    """The text as typed, in quotes; escaped where it holds a newline or another unprintable character,
    so an error stays one line."""
    text = str(text)
    return f"'{text}'" if text.isprintable() else repr(text)


def _read(text: str, pattern: re.Pattern, units: dict, what: str, forms: str, limit: float, most: str,
          kind: str = "") -> float:
    """A positive number with an optional exponent and a unit from `units`, at most `limit`."""
    m = pattern.match(str(text))
    if not m:
        raise UserError(f"{what}: can't read {_quoted(text)}{kind}; write it like {forms}")
    number, exponent, unit = m.groups()
    try:
        value = float(number) * 10.0 ** int(exponent or 0) * units[unit]
    except (OverflowError, ValueError):  # an exponent too large for a float, or too long to read
        value = math.inf
    if value <= 0:
        raise UserError(f"{what}: {_quoted(text)} must be positive; write it like {forms}")
    if value > limit:
        raise UserError(f"{what}: {_quoted(text)} is out of range; the most is {most}")
    return value


def _parse(text: str, pattern: re.Pattern, what: str, forms: str) -> int:
    return int(round(_read(text, pattern, _PREFIX, what, forms, LIMIT, f"{LIMIT:.0e}")))


def parse_flops(text: str, what: str = "--budget") -> int:
    return _parse(text, _FLOPS, what, FLOP_FORMS)


def is_time(text: str) -> bool:
    """Does the budget name a time (`20ms`, `1.5s`) rather than FLOPs?"""
    return bool(_TIME.match(str(text)))


def parse_ms(text: str, what: str = "--budget") -> float:
    """A time such as `20ms`, `1.5s` or `800us`, in milliseconds."""
    return _read(text, _TIME, _SECONDS, what, TIME_FORMS, TIME_LIMIT_S, f"{TIME_LIMIT_S:g}s", " as a time") * 1e3


def parse_budget(text: str, what: str = "--budget") -> tuple[int, float | None]:
    """A FLOP budget (FLOPs, None) or a time budget (0, ms)."""
    if is_time(text):
        return 0, parse_ms(text, what)
    if not _FLOPS.match(str(text)):
        raise UserError(f"{what}: can't read {_quoted(text)}; write FLOPs like {FLOP_FORMS}, "
                        f"or a time like {TIME_FORMS}")
    return parse_flops(text, what), None


def format_ms(ms: float) -> str:
    return f"{ms / 1e3:.2f} s" if ms >= 1e3 else f"{ms:.2f} ms" if ms >= 1 else f"{ms * 1e3:.0f} µs"


def parse_count(text: str, what: str = "--max-params") -> int:
    return _parse(text, _COUNT, what, COUNT_FORMS)


def format_flops(flops: float) -> str:
    """A human figure such as `2.00 GFLOPs`."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {prefix}FLOPs"
    return f"{flops:.0f} FLOPs"


def format_cost(axis: str, value: float) -> str:
    """A cost on a study's second objective in words: `2.00 GFLOPs`, `4.23M params` or `3.10 ms (predicted)`."""
    if axis == "latency":
        return f"{format_ms(value)} (predicted)"
    return f"{value / 1e6:.2f}M params" if axis == "params" else format_flops(value)
