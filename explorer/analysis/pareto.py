"""The Pareto front of a study (maximise proxy accuracy, minimise a cost) and its plot.

FLOPs are multiply-adds of the deployed network at the study's resolution.
The plot is a self-contained plotly page (no CDN): accuracy against a cost on a
log axis, the front as a staircase, dominated trials faded, points coloured by
family, named architectures as labelled stars, and buttons in the page that
switch the x axis between FLOPs, parameters and (where every trial has one)
predicted latency, the front redrawn for each.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import optuna

import space
from space.graph import offline_html
from space.named import named, names

from ..base import files
from ..base.dominance import accuracy_noise, tied
from ..base.errors import UserError
from ..studies.record import TrialRecord
from ..studies.rungs import highest_rungs
from ..studies.store import SECOND, settings_of

AXES = ("flops", "params", "latency")  # latency: where every trial has one (a study with a latency device)
AXIS_TITLES = SECOND  # each axis titled as a study on it names its second objective
# Families in the order the shipped spaces list them, then the classics' own; others are appended.
FAMILY_ORDER = ("vanilla", "residual", "resnext", "dense", "inception", "inception-resnet", "separable",
                "mobilenet", "metanext", "custom")
TIE_RING = 22  # px: the ring round a front point tied with another within noise
PALETTE = ("#1f77b4", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e", "#8c564b", "#17becf", "#e377c2",
           "#7f7f7f", "#bcbd22", "#393b79", "#637939")


@dataclass
class Point:
    number: int
    accuracy: float
    flops: int
    params: int
    family: str
    genotype: dict
    reference: str | None  # the named architecture this trial trains, if it is one
    digest: str = ""
    val_images: int | None = None  # the validation split its accuracy was measured on
    latency_ms: float | None = None  # predicted on the study's device, where it has one
    rung: int = 0                    # the highest rung it completed (explorer.sweep.promotion)
    accuracy_std: float | None = None  # the seed spread of `accuracy`, a mean, where its rung trained seeds
    seeds: int = 1

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial, objective: str) -> "Point":
        """A completed trial of a study whose second objective is `objective` (its value is read by that name)."""
        r = TrialRecord.of(trial, objective)
        if r.flops is None:
            raise UserError(f"trial {trial.number} has no stored FLOPs")
        return cls(r.number, r.accuracy, r.flops, r.params or 0, r.family or "custom",
                   space.dump(stored_genotype(trial)), r.reference, r.digest, r.val_images, r.latency_ms, r.rung,
                   r.accuracy_std, len(r.seed_accuracies) or 1)

    @property
    def noise(self) -> float:
        """One standard error: the seed spread, never less than the validation split's binomial error."""
        return accuracy_noise(self.accuracy, self.val_images, self.accuracy_std)

    @property
    def shown(self) -> str:
        """`0.8123 ± 0.0087`: the accuracy and its noise."""
        return f"{self.accuracy:.4f} ± {self.noise:.4f}"

    @property
    def label(self) -> str:
        """The named architecture this point is: its reference, or a classic with the same digest."""
        return self.reference or named_digests().get(self.digest, "")

    def cost(self, axis: str) -> float:
        return {"flops": self.flops, "params": self.params, "latency": self.latency_ms}[axis]


def axes_of(pts: list[Point]) -> tuple[str, ...]:
    """The x axes the points can be plotted on: latency too where every one has a predicted latency."""
    return AXES if pts and all(p.latency_ms is not None for p in pts) else AXES[:2]


def stored_genotype(trial, key: str = "genotype") -> space.Genotype:
    """A trial's stored genotype (or proxy genotype); a corrupt one is a one-line UserError naming the trial."""
    text = trial.user_attrs.get(key)
    if text is None:
        raise UserError(f"trial {trial.number} has no stored {key.replace('_', ' ')}")
    try:
        return space.load(json.loads(text) if isinstance(text, str) else text)
    except (ValueError, TypeError, RecursionError) as e:  # JSONDecodeError and GenotypeError are ValueErrors
        raise UserError(f"trial {trial.number}'s stored {key.replace('_', ' ')} is corrupt "
                        f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None


def points(study, objective: str | None = None) -> list[Point]:
    """The completed genotypes as points, each at its highest rung (`objective`: the study's second objective,
    by default as its settings say); one whose stored genotype is corrupt is left out with a one-line warning
    on stderr naming it, and every other trial still counts."""
    objective = objective or settings_of(study).objective
    pts = []
    for t in highest_rungs(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))):
        try:
            pts.append(Point.of(t, objective))
        except UserError as e:
            print(f"warning: {e}; trial {t.number} is skipped", file=sys.stderr)
    return pts


def noise_floor(pts: list[Point]) -> str | None:
    """The validation size and the binomial standard error of the best accuracy on it: gaps
    between proxies smaller than about two of these may be chance."""
    sizes = {p.val_images for p in pts if p.val_images}
    if not sizes:
        return None  # trials made before the size was recorded
    n, best = min(sizes), max(p.accuracy for p in pts)
    error = math.sqrt(best * (1 - best) / n)
    return (f"validation: {n:,} images held out of the training split; at accuracy {best:.3f} the binomial "
            f"standard error is {error:.4f} ({100 * error:.1f} points), so gaps under about "
            f"{200 * error:.1f} points may be noise")


def front(pts: list[Point], x: str = "flops") -> list[Point]:
    """Non-dominated points, cheapest first: each is more accurate than every cheaper one.

    `x` is the cost: "flops", "params" or "latency" (explorer.analysis.summary picks the study's).
    """
    best, out = -1.0, []
    for p in sorted(pts, key=lambda p: (p.cost(x), -p.accuracy)):
        if p.accuracy > best:
            out.append(p)
            best = p.accuracy
    return out


def ties(pts: list[Point], x: str = "flops") -> dict[int, list[int]]:
    """For each point on the front, the other front points it can't be told apart from: their
    accuracies' ± noise intervals overlap. Trial numbers, most accurate first."""
    on_front = sorted(front(pts, x), key=lambda p: -p.accuracy)
    return {p.number: [q.number for q in on_front if q is not p and tied((p.accuracy, p.noise), (q.accuracy, q.noise))]
            for p in on_front}


@lru_cache(maxsize=1)
def named_digests() -> dict[str, str]:
    """digest -> name of every registered classic, to label trials that drew one."""
    return {space.digest(named(n)): n for n in reversed(names())}


def summary(genotype: dict) -> str:
    """A compact one-line description of a genotype for hovers and tables."""
    stages = genotype.get("stages", [])
    depths = [sum(b.get("repeat", 1) for b in s.get("blocks", [])) for s in stages]
    skips = {b.get("skip", "none") for s in stages for b in s.get("blocks", [])}
    ops = {op.get("op") for s in stages for b in s.get("blocks", []) for br in b.get("branches", []) for op in br}
    width = genotype.get("width", 1.0)
    parts = [f"depths {'-'.join(map(str, depths))}", f"skip {'/'.join(sorted(skips))}"]
    if "sep" in ops:
        parts.append("separable")
    if width != 1.0:
        parts.append(f"width x{width}")
    return ", ".join(parts)


def family_sort(families) -> list[str]:
    return sorted(families, key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f))


def family_colours(families) -> dict[str, str]:
    """A stable colour per family: a shipped family gets the same colour in every plot of every study."""
    order = list(FAMILY_ORDER) + sorted(set(families) - set(FAMILY_ORDER))
    return {f: PALETTE[order.index(f) % len(PALETTE)] for f in families}


def si(value: float) -> str:
    """3 significant digits with an SI prefix: 568M, 1.21G."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}"
    return f"{value:.3g}"


def _axis_title(x: str, resolution: int | None) -> str:
    at = f" at {resolution}px" if resolution else ""
    if x == "flops":
        return f"FLOPs (multiply-adds){at}, log scale"
    if x == "latency":
        return f"latency (ms, predicted, batch 1){at}, log scale"
    return "parameters, log scale"


def _title(study_name: str, x: str) -> str:
    return f"{study_name}: proxy accuracy against {AXIS_TITLES[x]}"


def figure(study_name: str, pts: list[Point], x: str = "flops", resolution: int | None = None,
           budget: int | None = None, max_params: int | None = None, latency_budget: float | None = None):
    """Accuracy against FLOPs, params or latency (log x), the front as a step line, points coloured by family.

    One marker per point, in one trace per family (`meta="trials"`); each front is a trace with
    `meta="front"`; buttons switch the x axis, refading the points dominated on that axis.
    """
    import plotly.graph_objects as go  # heavy: loaded only when a figure is drawn
    axes = axes_of(pts)
    if x not in axes:
        raise ValueError(f"x must be one of {axes}")
    style = _Style(pts)
    groups = _family_groups(pts)
    limits = [(axis, limit) for axis, limit in (("flops", budget), ("params", max_params),
                                                ("latency", latency_budget)) if limit and axis in axes]
    fig = go.Figure(_trial_traces(go, groups, x, style) + _front_traces(go, pts, x))
    fig.update_layout(
        title=_title(study_name, x),
        xaxis=dict(title=_axis_title(x, resolution), type="log", exponentformat="SI"),
        yaxis=dict(title="proxy validation accuracy"), template="plotly_white", height=600,
        legend=dict(title="family"), margin=dict(t=110),
        shapes=[dict(type="line", xref="x", yref="paper", x0=limit, x1=limit, y0=0, y1=1, name=axis,
                     line=dict(color="#999999", dash="dash", width=1), visible=axis == x) for axis, limit in limits],
        annotations=[dict(x=math.log10(limit), xref="x", y=1, yref="paper", yanchor="bottom", showarrow=False,
                          text="param cap" if axis == "params" else "budget", font=dict(size=10, color="#777777"),
                          visible=axis == x) for axis, limit in limits],
        updatemenus=[dict(type="buttons", direction="right", x=0, xanchor="left", y=1.02, yanchor="bottom",
                          active=axes.index(x), showactive=True,
                          buttons=[dict(label=f"x: {AXIS_TITLES[a]}", method="update",
                                        args=_axis_switch(a, study_name, pts, groups, style, limits, resolution))
                                   for a in axes])])
    return fig


class _Style:
    """Markers: points on the front of the axis shown stand out, named architectures are large stars."""

    def __init__(self, pts: list[Point]):
        self.on_front = {axis: {p.number for p in front(pts, axis)} for axis in axes_of(pts)}
        self.colours = family_colours(family_sort({p.family for p in pts}))

    def opacity(self, fam: list[Point], axis: str) -> list[float]:
        return [1.0 if p.number in self.on_front[axis] else 0.75 if p.label else 0.3 for p in fam]

    def size(self, fam: list[Point], axis: str) -> list[int]:
        return [18 if p.label else 12 if p.number in self.on_front[axis] else 8 for p in fam]


def _family_groups(pts: list[Point]) -> list[tuple[str, list[Point], bool]]:
    """(family, points, named?): one group per family, and one more for its named architectures (stars),
    so the legend shows circles."""
    groups = []
    for f in family_sort({p.family for p in pts}):
        plain = [p for p in pts if p.family == f and not p.label]
        stars = [p for p in pts if p.family == f and p.label]
        groups += [(f, part, labelled) for part, labelled in ((plain, False), (stars, True)) if part]
    return groups


def _trial_traces(go, groups, x: str, style: _Style) -> list:
    return [go.Scatter(
        x=[p.cost(x) for p in fam], y=[p.accuracy for p in fam], mode="markers+text" if labelled else "markers",
        name=family, meta="trials", legendgroup=family,
        showlegend=not labelled or not any(f == family and not n for f, _, n in groups),
        text=[p.label for p in fam], textposition="top center", textfont=dict(size=11),
        marker=dict(color=style.colours[family], size=style.size(fam, x), opacity=style.opacity(fam, x),
                    symbol="star" if labelled else "circle", line=dict(width=1, color="#222222")),
        error_y=dict(type="data", array=[p.noise for p in fam], thickness=1, width=0, color=style.colours[family]),
        customdata=[[p.number, p.family, si(p.flops), f"{p.params:,}", summary(p.genotype),
                     f" ({p.label})" if p.label else "", _fidelity(p)] for p in fam],
        hovertemplate=("<b>trial %{customdata[0]}</b>%{customdata[5]}<br>family: %{customdata[1]}<br>"
                       "FLOPs (multiply-adds): %{customdata[2]}<br>params: %{customdata[3]}<br>"
                       "accuracy: %{customdata[6]}<br>%{customdata[4]}<extra></extra>"))
        for family, fam, labelled in groups]


def _fidelity(p: Point) -> str:
    """`0.8123 ± 0.0087 (rung 2, 2 seeds)`: what a point's accuracy and its error bar rest on."""
    at = [f"rung {p.rung}"] if p.rung else []
    at += [f"{p.seeds} seeds"] if p.seeds > 1 else ["1 seed: the error bar is the validation's binomial error"]
    return f"{p.shown} ({', '.join(at)})"


def _tied(pts: list[Point], axis: str) -> list[Point]:
    tie = ties(pts, axis)
    return [p for p in front(pts, axis) if tie[p.number]]


def _front_traces(go, pts: list[Point], x: str) -> list:
    """Per axis: the front as a step line, and a ring round each front point tied with another within noise."""
    traces = []
    for axis in axes_of(pts):
        suffix, tie = ("" if axis == "flops" else f" ({axis})"), ties(pts, axis)
        said = {n: f"trial {n}: tied within noise with trial{'s' * (len(t) > 1)} {', '.join(map(str, t))}"
                for n, t in tie.items()}
        traces += [go.Scatter(x=[p.cost(axis) for p in front(pts, axis)], y=[p.accuracy for p in front(pts, axis)],
                              mode="lines", meta="front", hoverinfo="skip", visible=axis == x,
                              name=f"Pareto front{suffix}", line=dict(color="black", width=1.5, shape="hv")),
                   go.Scatter(x=[p.cost(axis) for p in _tied(pts, axis)], y=[p.accuracy for p in _tied(pts, axis)],
                              mode="markers", meta="ties", visible=axis == x, name=f"tied within noise{suffix}",
                              marker=dict(symbol="circle-open", size=TIE_RING, color="black", line=dict(width=1.5)),
                              text=[said[p.number] for p in _tied(pts, axis)],
                              hovertemplate="%{text}<extra></extra>")]
    return traces


def _axis_switch(axis: str, study_name: str, pts, groups, style: _Style, limits, resolution) -> list[dict]:
    """The button's restyle (every trace's x, fading and visibility) and relayout for x = `axis`."""
    families, axes = [fam for _, fam, _ in groups], axes_of(pts)
    per_axis = [[p.cost(a) for p in shown] for a in axes for shown in (front(pts, a), _tied(pts, a))]
    data = {"x": [[p.cost(axis) for p in fam] for fam in families] + per_axis,
            "marker.opacity": [style.opacity(fam, axis) for fam in families] + [None, 1.0] * len(axes),
            "marker.size": [style.size(fam, axis) for fam in families] + [None, TIE_RING] * len(axes),
            "visible": [True] * len(families) + [a == axis for a in axes for _ in range(2)]}
    layout = {"xaxis.title.text": _axis_title(axis, resolution), "title.text": _title(study_name, axis)}
    for i, (kind, _) in enumerate(limits):
        layout[f"shapes[{i}].visible"] = kind == axis
        layout[f"annotations[{i}].visible"] = kind == axis
    return [data, layout]


def write_plot(study_name: str, pts: list[Point], path, x: str = "flops", resolution: int | None = None,
               budget: int | None = None, max_params: int | None = None, png=None, force: bool = False,
               latency_budget: float | None = None) -> None:
    """The page in the study's folder (regenerated each time); `png`, a path the user named, needs `force`
    to replace a file."""
    if png is not None:
        files.check_target(Path(png), force, "--png")
    fig = figure(study_name, pts, x, resolution, budget, max_params, latency_budget)
    files.write(path, offline_html(fig), "plot", own=True)
    if png is not None:
        write_png(fig, png, force)


def write_png(fig, path, force: bool = False) -> None:
    """A static image through plotly's own exporter, kaleido, which renders in a local Chrome or Chromium."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise UserError("--png needs kaleido, plotly's image exporter: pip install 'explore[png]'") from None
    try:
        files.write(Path(path), lambda tmp: fig.write_image(str(tmp), format="png", width=1200, height=620),
                    "--png", force)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - kaleido reports a missing browser in many ways
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--png: kaleido couldn't render the image ({first}); it needs Chrome or Chromium "
                        "(e.g. apt-get install chromium)") from None
