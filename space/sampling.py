"""Spaces: genotype documents in which any field may be a choice.

    {choice: [a, b, c]}                  one of the options (options may be whole sub-documents)
    {range: [lo, hi], step: s}           an int (or float) on a grid
    {range: [lo, hi], log: true}         log-uniform
    {space: residual}                    a shipped space, inlined

A choice may carry `name:`; choices sharing a name are tied (sampled once).
Otherwise its parameter name is its path in the document, so Optuna sees
stable names. Short names (`short=True`, what new studies use) abbreviate the
path and drop the root choice's name: `mobilenet.s3.b0.repeat` rather than
`family=mobilenet.stages[3].blocks[0].repeat`, and the root choice between
whole documents (the union's family) is `arch`, so it sorts first where
parameters are listed by name (optuna-dashboard's default slice plot is the
first, and every trial has this one). A genotype is a space with every choice
fixed. `sample` draws from a seeded `random.Random`
or an Optuna trial; `match` finds the parameters that give a genotype, so the
classics can be enqueued into a study as reference points.
"""
from __future__ import annotations

import difflib
import math
import random
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from .document import check_tree, read_text
from .errors import GenotypeError, join
from .schema import Genotype, digest, load, parse_text

PRIMITIVE = (type(None), bool, int, float, str)


def is_choice(node: Any) -> bool:
    return isinstance(node, dict) and "choice" in node and set(node) <= {"choice", "name", "labels"}


def is_range(node: Any) -> bool:
    return isinstance(node, dict) and "range" in node and set(node) <= {"range", "step", "log", "name"}


# --------------------------------------------------------------------------- sources

class RandomSource:
    """Draws from a seeded generator; tied names return their first draw."""

    def __init__(self, rng: random.Random | int | None = None):
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        self.params: dict[str, Any] = {}

    def categorical(self, name: str, options: list) -> Any:
        if name not in self.params:
            self.params[name] = self.rng.choice(options)
        return self.params[name]

    def number(self, name: str, lo, hi, step, log: bool):
        if name not in self.params:
            if _integral(lo, hi, step) and step is None and not log:
                step = 1
            if log:
                value = math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
                value = min(hi, max(lo, round(value))) if isinstance(lo, int) else value
            elif step is not None:
                value = lo + step * self.rng.randint(0, int((hi - lo) // step))
            else:
                value = self.rng.uniform(lo, hi)
            self.params[name] = value
        return self.params[name]


def _integral(lo, hi, step) -> bool:
    return isinstance(lo, int) and isinstance(hi, int) and (step is None or isinstance(step, int))


class TrialSource:
    """Draws through an Optuna trial's suggest API (imported lazily: optuna is optional here)."""

    def __init__(self, trial):
        self.trial = trial

    def categorical(self, name: str, options: list) -> Any:
        return self.trial.suggest_categorical(name, options)

    def number(self, name: str, lo, hi, step, log: bool):
        if _integral(lo, hi, step):
            return self.trial.suggest_int(name, lo, hi, step=step or 1, log=log)
        return self.trial.suggest_float(name, float(lo), float(hi), step=step, log=log)


class FixedSource:
    """Replays a parameter dict (what `match` returns)."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    def categorical(self, name: str, options: list) -> Any:
        return self.params[name]

    def number(self, name: str, lo, hi, step, log: bool):
        return self.params[name]


def source_for(rng_or_trial) -> Any:
    if hasattr(rng_or_trial, "suggest_categorical"):
        return TrialSource(rng_or_trial)
    if isinstance(rng_or_trial, (RandomSource, TrialSource, FixedSource)):
        return rng_or_trial
    return RandomSource(rng_or_trial)


# --------------------------------------------------------------------------- spaces

def _labels(node: dict, path: str) -> list:
    """Categorical values Optuna can store: the options themselves when
    primitive, else their labels (given, or the shipped space's name, or the index)."""
    options = node["choice"]
    if all(isinstance(o, PRIMITIVE) for o in options):
        return list(options)
    if "labels" in node:
        return list(node["labels"])
    return [o.get("family") or o.get("name") or i if isinstance(o, dict) else i for i, o in enumerate(options)]


def option_labels(node: dict) -> list:
    """The values a choice's parameter takes, one per option (what Optuna stores)."""
    return _labels(node, "")


ROOT_CHOICE = "arch"
_ABBREVIATIONS = [(re.compile(r"stages\[(\d+)\]"), r"s\1"), (re.compile(r"blocks\[(\d+)\]"), r"b\1"),
                  (re.compile(r"branches\[(\d+)\]\[(\d+)\]"), r"br\1.op\2"),
                  (re.compile(r"branches\[(\d+)\]"), r"br\1"), (re.compile(r"(\w)\[(\d+)\]"), r"\1\2")]


def short_path(path: str) -> str:
    """`stages[3].blocks[0].branches[1][0].out` -> `s3.b0.br1.op0.out`; `stem[0].out` -> `stem0.out`."""
    for pattern, repl in _ABBREVIATIONS:
        path = pattern.sub(repl, path)
    return path


def _param_name(node: dict, path: str, prefix: str, short: bool = False) -> str:
    """An explicit name is global (that is what ties choices); a path is relative to its option."""
    if short and not path and not prefix and is_choice(node):
        return ROOT_CHOICE
    if "name" in node:
        return node["name"]
    return prefix + (short_path(path) if short else path or "choice")


def _inner_prefix(name: str, label: Any, short: bool) -> str:
    """The prefix of the names inside a chosen option: `family=mobilenet.`, or `mobilenet.` for the root choice."""
    return f"{label}." if short and name == ROOT_CHOICE else f"{name}={label}."


def _walk(node: Any, path: str, src, prefix: str, short: bool) -> Any:
    if is_choice(node):
        labels = _labels(node, path)
        name = _param_name(node, path, prefix, short)
        value = src.categorical(name, labels)
        option = node["choice"][labels.index(value)]
        if isinstance(option, PRIMITIVE):
            return option
        return _walk(option, "", src, _inner_prefix(name, value, short), short)
    if is_range(node):
        lo, hi = node["range"]
        return src.number(_param_name(node, path, prefix, short), lo, hi, node.get("step"), bool(node.get("log")))
    if isinstance(node, dict):
        return {k: _walk(v, join(path, k), src, prefix, short) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, join(path, i), src, prefix, short) for i, v in enumerate(node)]
    return node


def rewrite(node: Any, change, short: bool = False, path: str = "", prefix: str = "") -> Any:
    """A copy of a space in which every choice and range is replaced by `change(name, node)`, named as
    `sample` names its parameter; the options a new choice keeps are rewritten in turn. Tied choices get
    the same name, so a `change` that depends only on (name, node) keeps them identical."""
    if is_choice(node) or is_range(node):
        name = _param_name(node, path, prefix, short)
        new = change(name, node)
        if not is_choice(new):
            return new
        labels = _labels(new, path)
        return {**new, "choice": [o if isinstance(o, PRIMITIVE) else rewrite(o, change, short, "",
                                                                                 _inner_prefix(name, label, short))
                                  for label, o in zip(labels, new["choice"])]}
    if isinstance(node, dict):
        return {k: rewrite(v, change, short, join(path, k), prefix) for k, v in node.items()}
    if isinstance(node, list):
        return [rewrite(v, change, short, join(path, i), prefix) for i, v in enumerate(node)]
    return node


def sample_document(space: Any, rng_or_trial, short: bool = False) -> dict:
    """One genotype document drawn from `space` (a dict with choices); `short`: short parameter names."""
    return _walk(space, "", source_for(rng_or_trial), "", short)


def sample(space: Any, rng_or_trial, short: bool = False) -> Genotype:
    """Draw and validate one genotype; raises GenotypeError if the draw is impossible."""
    return load(sample_document(space, rng_or_trial, short))


# --------------------------------------------------------------------------- matching

def match(space: Any, genotype: Genotype, short: bool = False) -> dict[str, Any] | None:
    """Parameters that make `space` produce exactly `genotype`'s architecture, or None if it
    isn't in the space. The canonical resolution is a label here, not architecture."""
    target = genotype.model_dump(mode="json")
    want = digest(genotype)
    for params in _unify(space, target, "", "", {}, short):
        try:
            drawn = sample(space, FixedSource(params), short)
        except (GenotypeError, KeyError):
            continue
        if digest(drawn.model_copy(update={"resolution": genotype.resolution})) == want:
            return params
    return None


def _unify(node: Any, value: Any, path: str, prefix: str, params: dict, short: bool) -> Iterator[dict]:
    if is_choice(node):
        name = _param_name(node, path, prefix, short)
        for label, option in zip(_labels(node, path), node["choice"]):
            if name in params and params[name] != label:
                continue
            bound = {**params, name: label}
            if isinstance(option, PRIMITIVE):
                yield from _unify(option, value, path, prefix, bound, short)
            else:
                yield from _unify(option, value, "", _inner_prefix(name, label, short), bound, short)
        return
    if is_range(node):
        name = _param_name(node, path, prefix, short)
        lo, hi = node["range"]
        step = node.get("step")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi
        if ok and step is not None:
            ok = abs((value - lo) / step - round((value - lo) / step)) < 1e-9
        if ok and params.get(name, value) == value:
            yield {**params, name: value}
        return
    if isinstance(node, dict):
        if not isinstance(value, dict):
            return
        yield from _unify_items(list(node.items()), value, path, prefix, params, True, short)
        return
    if isinstance(node, list):
        if isinstance(value, list) and len(value) == len(node):
            yield from _unify_items(list(enumerate(node)), value, path, prefix, params, False, short)
        return
    if node == value or (isinstance(node, list) and list(node) == value):
        yield params


def _unify_items(items, value, path, prefix, params, dict_mode: bool, short: bool) -> Iterator[dict]:
    if not items:
        yield params
        return
    (key, node), rest = items[0], items[1:]
    if dict_mode and key not in value:
        return
    if dict_mode and key == "resolution" and not path:  # a label, see match()
        yield from _unify_items(rest, value, path, prefix, params, dict_mode, short)
        return
    for bound in _unify(node, value[key], join(path, key), prefix, params, short):
        yield from _unify_items(rest, value, path, prefix, bound, dict_mode, short)


# --------------------------------------------------------------------------- shipped spaces

SPACES_DIR = resources.files("space") / "spaces"


def space_names() -> list[str]:
    return sorted(p.name[:-5] for p in SPACES_DIR.iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str | Path, inlining: tuple = ()) -> Any:
    """A shipped space by name, or a YAML/JSON file in the grammar's format, with references inlined.

    `inlining` is the chain of files being inlined, so a space that includes itself is refused, not looped."""
    text = str(name_or_path)
    if text in space_names():
        return _shipped(text)
    path = Path(text)
    if not path.exists():
        near = difflib.get_close_matches(text, space_names(), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise GenotypeError("space", f"'{text}' is neither a shipped space nor a file; {hint}"
                            f"shipped: {', '.join(space_names())}")
    if path.resolve() in inlining:
        raise GenotypeError(str(path), "includes itself through {space: ...}; a space can't contain itself")
    try:
        doc = parse_text(read_text(path))
        return check_space(_inline(doc, "", inlining + (path.resolve(),)))
    except GenotypeError as e:
        if e.path.startswith(str(path)):
            raise
        raise GenotypeError(f"{path}: {e.path}" if e.path else str(path), e.reason) from None


@lru_cache(maxsize=None)
def _shipped(name: str) -> Any:
    doc = parse_text((SPACES_DIR / f"{name}.yaml").read_text())
    return check_space(_inline(doc, ""))


def _inline(node: Any, path: str, inlining: tuple = ()) -> Any:
    if isinstance(node, dict) and set(node) == {"space"}:
        if not isinstance(node["space"], str):
            raise GenotypeError(join(path, "space"), "names a shipped space or a file; expected text")
        return load_space(node["space"], inlining)
    if isinstance(node, dict):
        return {k: _inline(v, join(path, k), inlining) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, join(path, i), inlining) for i, v in enumerate(node)]
    return node


def check_space(space: Any, path: str = "") -> Any:
    """Validate choices, then the skeleton: the document with every choice at its first option."""
    check_tree(space, path)
    _check_choices(space, path, {})
    if not isinstance(space, dict):
        raise GenotypeError(path, "a space is a genotype document, or a {choice: [...]} of them")
    _check_options(space)
    return space


class _ProbeSource:
    """Draws the first option of every choice except those `picks` names, recording each choice it meets."""

    def __init__(self, picks: dict[str, Any]):
        self.picks, self.seen = picks, {}

    def categorical(self, name: str, options: list) -> Any:
        self.seen.setdefault(name, options)
        return self.picks.get(name, options[0])

    def number(self, name: str, lo, hi, step, log: bool):
        return lo


def _check_options(space: Any) -> None:
    """Every option of every choice must make a valid document (with the other choices at their first
    option), so a bad later option is refused before a study exists, not when a trial first draws it."""
    todo, met = [({}, None)], set()
    while todo:
        picks, newest = todo.pop()
        src = _ProbeSource(picks)
        try:
            load(_walk(space, "", src, "", False))
        except GenotypeError as e:
            if newest is None:
                raise
            name, i = newest
            raise GenotypeError(e.path or join(name, i), f"{e.reason} (option {i} of the choice {name}; "
                                "fix that option or drop it)") from None
        for name, labels in src.seen.items():
            if name not in met:
                met.add(name)
                todo += [({**picks, name: label}, (name, i)) for i, label in enumerate(labels) if i]


def _check_choices(node: Any, path: str, tied: dict) -> None:
    if isinstance(node, dict) and ("choice" in node or "range" in node):
        extra = set(node) - ({"choice", "name", "labels"} if "choice" in node else {"range", "step", "log", "name"})
        if extra:
            raise GenotypeError(join(path, sorted(map(str, extra))[0]),
                                "unknown key in a choice; use choice/name/labels or range/step/log/name")
        if "choice" in node:
            if not isinstance(node["choice"], list) or not node["choice"]:
                raise GenotypeError(join(path, "choice"), "must be a non-empty list of options")
            labels = node.get("labels", [])
            if not (isinstance(labels, list) and all(isinstance(v, (str, int, float, bool)) for v in labels)):
                raise GenotypeError(join(path, "labels"), "must be a list of text labels, one per option")
            if "labels" in node and (len(node["labels"]) != len(node["choice"])
                                     or len(set(node["labels"])) != len(node["labels"])):
                raise GenotypeError(join(path, "labels"), "needs one distinct label per option")
            for i, option in enumerate(node["choice"]):
                _check_choices(option, join(join(path, "choice"), i), tied)
        else:
            r = node["range"]
            numbers = isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) for v in r)
            if not (numbers and r[0] <= r[1]):
                raise GenotypeError(join(path, "range"), "must be [low, high] numbers with low <= high")
            if node.get("log") and (r[0] <= 0 or "step" in node):
                raise GenotypeError(join(path, "log"), "a log range needs low > 0 and no step")
            if "step" in node and not (isinstance(node["step"], (int, float)) and node["step"] > 0):
                raise GenotypeError(join(path, "step"), "must be a positive number")
        if "name" in node:
            if not isinstance(node["name"], str):
                raise GenotypeError(join(path, "name"), "a choice's name is text, e.g. name: depth")
            if node["name"] in tied and tied[node["name"]] != {k: v for k, v in node.items()}:
                raise GenotypeError(join(path, "name"), f"'{node['name']}' ties choices that differ; "
                                    "tied choices must be identical")
            tied[node["name"]] = {k: v for k, v in node.items()}
        return
    if isinstance(node, dict):
        for k, v in node.items():
            _check_choices(v, join(path, k), tied)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_choices(v, join(path, i), tied)


def _first_options(node: Any) -> Any:
    if is_choice(node):
        return _first_options(node["choice"][0])
    if is_range(node):
        return node["range"][0]
    if isinstance(node, dict):
        return {k: _first_options(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_first_options(v) for v in node]
    return node
