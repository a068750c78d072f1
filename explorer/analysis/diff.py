"""What a genotype changes from its nearest named architecture, one short line per changed field."""
from __future__ import annotations

import json
from typing import Any

import space
from space.named import named


def _compact(value: Any) -> Any:
    """A document without its unset (null) fields, for display."""
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(_compact(value), separators=(",", ":"))
    else:
        text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """A compact recursive diff of two documents: `stages[2].blocks[0].repeat: 6 → 3` per changed field,
    `+ path: value` for what only `new` has, `- path: value` for what only `old` has."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"- {sub}: {_short(old[key])}")
            elif key not in old:
                out.append(f"+ {sub}: {_short(new[key])}")
            else:
                out += diff(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(new):
                out.append(f"- {sub}: {_short(old[i])}")
            elif i >= len(old):
                out.append(f"+ {sub}: {_short(new[i])}")
            else:
                out += diff(old[i], new[i], sub)
        return out
    if old != new:
        return [f"{path}: {_short(old, 40)} → {_short(new, 40)}"]
    return []


def genotype_diff(nearest: str, genotype: dict) -> list[str]:
    """How a genotype differs from a named one (labels `name`, `resolution` and `classes` aside)."""
    skip = {"name", "resolution", "classes"}
    old = {k: v for k, v in named(nearest).model_dump(mode="json").items() if k not in skip}
    new = {k: v for k, v in space.load(genotype).model_dump(mode="json").items() if k not in skip}
    return diff(old, new)
