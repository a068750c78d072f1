"""A study's results as Python objects: what `explorer.search` and `explorer.open_study` return.

The front is typed rows (`FrontRow`), the plot is the same plotly figure `explore plot` writes, and
in a notebook the result shows itself: `repr` is a short summary, `_repr_html_` the front as a table.
Every view reads the study afresh, so a result stays current while its study goes on.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import optuna

import space

from ..base.budget import format_flops
from ..base.errors import UserError
from ..base.settings import Settings
from ..studies.storage import redact
from ..studies.store import completed, settings_of
from . import pareto, summary

BULKY = ("genotype", "proxy_genotype", "history", "traceback")  # user attrs left out of dataframe()


@dataclass(frozen=True)
class FrontRow:
    """One Pareto-optimal trial. `flops` are multiply-adds of the deployed network (1000 classes) at the
    study's resolution; `noise` is the binomial standard error of `accuracy` on the validation split."""
    trial: int
    genotype: space.Genotype = field(repr=False)
    flops: int
    params: int
    accuracy: float
    noise: float | None
    label: str       # the classic this is, else the nearest one as `~name`
    family: str
    latency_ms: float | None = None  # predicted on the study's device, where it prices latency


class Result:
    """A study and its settings; `front`, `best`, `plot` and `dataframe` read its trials when called."""

    def __init__(self, study: optuna.Study, url: str):
        self.study, self.url = study, url
        self.settings: Settings = settings_of(study)

    @property
    def name(self) -> str:
        return self.study.study_name

    def points(self) -> list[pareto.Point]:
        return pareto.points(self.study)

    @property
    def front(self) -> list[FrontRow]:
        """The Pareto set on the study's cost axis, most accurate first."""
        return [self._row(r) for r in summary.summarise(self.study, self.settings, self.points()).front]

    @staticmethod
    def _row(r: summary.FrontRow) -> FrontRow:
        p = r.point
        noise = math.sqrt(p.accuracy * (1 - p.accuracy) / p.val_images) if p.val_images else None
        label = r.nearest if r.itself or not r.nearest else "~" + r.nearest
        return FrontRow(p.number, space.load(p.genotype), p.flops, p.params, p.accuracy, noise, label, p.family,
                        p.latency_ms)

    def best(self, k: int = 1) -> list[space.Genotype]:
        """The k most accurate genotypes of the front, then of the other completed trials; `space.build(g,
        classes, in_channels)` makes one a torch module."""
        pts = self.points()
        on_front = {p.number for p in pareto.front(pts, summary.front_axis(pts, self.settings))}
        ranked = sorted(pts, key=lambda p: (p.number not in on_front, -p.accuracy))
        return [space.load(p.genotype) for p in ranked[:k]]

    def plot(self, x: str = "flops"):
        """The Pareto plot `explore plot` writes, as a plotly Figure (it shows itself in a notebook)."""
        pts = self.points()
        if not pts:
            raise UserError(f"study '{self.name}' has no completed trials to plot yet")
        if x not in pareto.axes_of(pts):
            raise UserError(f"x: unknown axis '{x}' for this study; choose {' or '.join(pareto.axes_of(pts))}")
        s = self.settings
        return pareto.figure(self.name, pts, x, s.resolution, s.budget, s.max_params, s.latency_budget)

    def dataframe(self):
        """Every trial as a pandas DataFrame: its state, both objectives and its design axes (user attrs)."""
        try:
            import pandas  # optional: only this method needs it
        except ImportError:
            raise UserError("dataframe() needs pandas: pip install pandas") from None
        second = self.study.metric_names[1] if self.study.metric_names else "cost"
        rows = [{"number": t.number, "state": t.state.name,
                 "accuracy": t.values[0] if t.values else None, second: t.values[1] if t.values else None,
                 "duration_s": t.duration.total_seconds() if t.duration else None,
                 **{k: v for k, v in t.user_attrs.items() if k not in BULKY and not isinstance(v, dict)}}
                for t in self.study.get_trials(deepcopy=False)]
        return pandas.DataFrame(rows).set_index("number")

    def __repr__(self) -> str:
        s, front = self.settings, self.front
        done = len(completed(self.study))
        top = (f"; best accuracy {front[0].accuracy:.4f} at {format_flops(front[0].flops)} (multiply-adds)"
               if front else "")
        return (f"<Result of study '{self.name}' in {redact(self.url)}: {done}/{s.trials} trials, budget "
                f"{s.budget_text} at {s.resolution} px, dataset {s.dataset}; front of {len(front)}{top}>")

    def _repr_html_(self) -> str:
        head = ("trial", "label", "family", "GFLOPs (multiply-adds)", "M params", "accuracy", "± noise")
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                r.trial, r.label, r.family, f"{r.flops / 1e9:.3f}", f"{r.params / 1e6:.2f}", f"{r.accuracy:.4f}",
                "" if r.noise is None else f"{r.noise:.4f}")) + "</tr>" for r in self.front)
        caption = html.escape(repr(self))
        return (f"<table><caption>{caption}</caption><thead><tr>"
                + "".join(f"<th>{h}</th>" for h in head) + f"</tr></thead><tbody>{body}</tbody></table>")

