"""The rungs of multi-fidelity promotion (`explore search --rungs`): what each rung above the study's
proxy trains with.

Rung 0 is the study's proxy (its epochs, training images, resolution and width). Each rung above costs
about ETA times the one below, and only the best 1/ETA of a rung is promoted to it (MO-ASHA), so every
rung costs about as much as rung 0 in all. The top rung trains more than one seed, so the front it
shows carries a seed spread (explorer.analysis.pareto).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .errors import UserError

ETA = 3               # each rung trains ETA times the images or epochs of the one below; 1/ETA is promoted
IMAGE_CAP = 20_000    # the default ladder grows training images up to the truth's (benchmarks/fidelity.py), then epochs
TOP_SEEDS = 2         # seeds the top rung trains, unless its spec says otherwise
KEYS = ("epochs", "images", "resolution", "width", "seeds")


@dataclass(frozen=True)
class Rung:
    epochs: int
    train_images: int | None  # None: the whole training split
    resolution: int
    width: float
    seeds: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def default_ladder(base: Rung, count: int) -> list[Rung]:
    """`count` rungs in all, rung 0 being `base`: training images grow ETA-fold up to IMAGE_CAP, then epochs."""
    rungs = [base]
    for _ in range(count - 1):
        last = rungs[-1]
        grow_images = last.train_images is not None and last.train_images * ETA <= IMAGE_CAP
        rungs.append(replace(last, train_images=last.train_images * ETA) if grow_images
                     else replace(last, epochs=last.epochs * ETA))
    return _top_seeds(rungs, {})


def parse_rungs(text: str, base: Rung) -> list[dict]:
    """The rungs above rung 0 that `--rungs` asks for, as stored with the study.

    `off` or `1`: none. `N`: the default ladder of N rungs. Else rungs 1, 2, ... separated by commas, each
    `key=value` pairs joined by `/` (keys: epochs, images, resolution, width, seeds); a key left out keeps
    the rung below's value, e.g. `images=9000, epochs=6/seeds=3`.
    """
    text = text.strip().lower()
    if text in ("off", "1", "none", ""):
        return []
    if text.isdigit():
        if not 2 <= int(text) <= 6:
            raise UserError(f"--rungs: {text} rungs is out of range; use 2 to 6, or off")
        return [r.to_dict() for r in default_ladder(base, int(text))[1:]]
    rungs, given = [base], {}
    for number, spec in enumerate(text.split(","), 1):
        given = dict(_pair(part, number) for part in spec.split("/") if part.strip())
        rungs.append(replace(rungs[-1], **{"seeds": 1, **{("train_images" if k == "images" else k): v
                                                           for k, v in given.items()}}))
    return [r.to_dict() for r in _top_seeds(rungs, given)[1:]]


def _top_seeds(rungs: list[Rung], top_given: dict) -> list[Rung]:
    if len(rungs) > 1 and "seeds" not in top_given:
        rungs[-1] = replace(rungs[-1], seeds=TOP_SEEDS)
    return rungs


def _pair(part: str, number: int) -> tuple[str, float | int]:
    """One `key=value` of rung `number`'s spec, checked; a bad one is a one-line UserError naming it."""
    key, _, value = (s.strip() for s in part.partition("="))
    if key not in KEYS:
        raise UserError(f"--rungs: rung {number} has unknown key '{key}'; use {', '.join(KEYS)} as key=value "
                        "joined by '/', rungs separated by ',' (e.g. images=9000, epochs=6/seeds=3), or a count")
    try:
        number_value = float(value) if key == "width" else int(value)
    except ValueError:
        raise UserError(f"--rungs: rung {number}'s {key} '{value}' isn't a "
                        f"{'number' if key == 'width' else 'whole number'}") from None
    limits = {"resolution": (8, 8192), "width": (0.01, 16), "seeds": (1, 20)}.get(key, (1, 100_000_000))
    if not limits[0] <= number_value <= limits[1]:
        raise UserError(f"--rungs: rung {number}'s {key} {value} is out of range; use {limits[0]:g} to {limits[1]:g}")
    return key, number_value


def describe(rungs: list[dict]) -> str:
    """`off`, or each rung above 0 in a few words: `2 ep x 9000 img; 6 ep x 9000 img, 2 seeds`."""
    if not rungs:
        return "off"
    return "; ".join(f"{r['epochs']} ep x {r['train_images'] or 'all'} img at {r['resolution']}px, width {r['width']:g}"
                     + (f", {r['seeds']} seeds" if r["seeds"] > 1 else "") for r in rungs)
