"""One study's results, decided once: the cost axis its front is on, the front, the named
architecture nearest each front point, how many trials ended each way, and the proxy in words.

The table `explore search` and `explore pareto` print, `pareto --json/--csv`, the plot and the
report all read this, so they can't disagree on the front, its labels or its axis.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import optuna

import space

from ..base.settings import Settings
from ..studies.record import counts
from ..studies.rungs import rung_of
from ..trial.candidate import nearest_named
from . import pareto


@dataclass(frozen=True)
class FrontRow:
    """A point of the front, ranked by accuracy, with the named architecture nearest it."""
    rank: int
    point: pareto.Point
    nearest: str   # the named architecture the point is, else the closest one ("" if none prices)
    itself: bool   # the point is that named architecture (a reference, or a draw with its digest)
    tied_with: list[int]  # the other front points within its noise (pareto.ties), most accurate first

    def as_dict(self) -> dict:
        """The row as `explore pareto --json/--csv` writes it (FLOPs are multiply-adds)."""
        p = self.point
        return dict(rank=self.rank, trial=p.number, family=p.family, flops=p.flops, params=p.params,
                    accuracy=p.accuracy, noise=p.noise, tied_with=self.tied_with, rung=p.rung, seeds=p.seeds,
                    nearest_named=self.nearest, itself=self.itself,
                    reference=bool(p.reference), digest=p.digest,
                    **({"latency_ms": p.latency_ms} if p.latency_ms is not None else {}))


@dataclass(frozen=True)
class Summary:
    axis: str                  # the cost the front is on: flops, params or latency
    front: list[FrontRow]      # most accurate first
    states: dict[str, int]     # trials by state (explorer.studies.record.state_of)
    promoted: dict[int, int]   # completed promotions by rung (explorer.sweep.promotion)
    proxy: str                 # what each trial trains, in words

    @property
    def timed(self) -> bool:
        """Whether the front is on predicted latency (tables then show it)."""
        return self.axis == "latency"


def front_axis(pts: list[pareto.Point], settings: Settings) -> str:
    """The study's second objective, where every point has a cost on it; else FLOPs."""
    return settings.objective if settings.objective in pareto.axes_of(pts) else "flops"


def nearest(p: pareto.Point, resolution: int) -> tuple[str, bool]:
    """The named architecture `p` is (its reference, or a classic with its digest), else the nearest;
    and whether it is that architecture itself."""
    if p.label:
        return p.label, True
    return nearest_named(space.load(p.genotype), p.flops, p.params, resolution), False


def summarise(study, settings: Settings, pts: list[pareto.Point]) -> Summary:
    axis = front_axis(pts, settings)
    ranked = sorted(pareto.front(pts, axis), key=lambda p: -p.accuracy)
    ties = pareto.ties(pts, axis)
    rows = [FrontRow(rank, p, *nearest(p, settings.resolution), ties[p.number]) for rank, p in enumerate(ranked, 1)]
    trials = study.get_trials(deepcopy=False)
    promoted = Counter(rung_of(t) for t in trials if rung_of(t) and t.state == optuna.trial.TrialState.COMPLETE)
    return Summary(axis, rows, counts(trials), dict(promoted), settings.proxy.describe())
