"""The report's figures beyond the Pareto plot: the hypervolume over trials, a timeline of every
trial with its outcome, and a network graph. Hypervolume is of (accuracy, cost) against the budget,
on the budget's axis (FLOPs, or predicted latency for a time budget): the area the front dominates,
accuracy from 0 up and cost from the budget down."""
from __future__ import annotations

import html
from datetime import datetime

import space

from ..studies.record import TrialRecord, state_of
from . import pareto


def hypervolume(pts: list[tuple[float, float]], budget: float) -> float:
    """The area dominated by (accuracy, cost) points, up to the reference point (accuracy 0, cost = budget),
    as a fraction of the box [0, 1] x [0, budget]."""
    inside = sorted((f, a) for a, f in pts if f <= budget and a > 0)
    area, best = 0.0, 0.0
    steps = []
    for f, a in inside:
        if a > best:
            steps.append((f, a))
            best = a
    for (f, a), nxt in zip(steps, [s[0] for s in steps[1:]] + [budget]):
        area += a * (nxt - f)
    return area / budget if budget else 0.0


def budget_axis(settings) -> tuple[str, float]:
    """The cost axis the study's budget is on, and the budget: latency (ms) for a time budget, else FLOPs."""
    return ("latency", settings.latency_budget) if settings.latency_budget else ("flops", settings.budget)


def hypervolume_history(pts: list[pareto.Point], budget: float, axis: str = "flops") -> tuple[list[int], list[float]]:
    """Trial numbers in order and the hypervolume of the completed trials up to each."""
    numbers, values, seen = [], [], []
    for p in sorted(pts, key=lambda p: p.number):
        if p.cost(axis) is None:
            continue  # no predicted latency (a study resumed from before latency budgets): not on this axis
        seen.append((p.accuracy, p.cost(axis)))
        numbers.append(p.number)
        values.append(hypervolume(seen, budget))
    return numbers, values


def hypervolume_figure(numbers: list[int], values: list[float], axis: str = "flops"):
    """The hypervolume after each trial (`hypervolume_history`), on the budget's `axis`."""
    import plotly.graph_objects as go
    fig = go.Figure(go.Scatter(x=numbers, y=values, mode="lines+markers", line=dict(shape="hv"), name="hypervolume",
                               hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>"))
    title = (f"Hypervolume over trials (reference point: accuracy 0, {pareto.AXIS_TITLES[axis]} = budget; "
             "fraction of that box)")
    fig.update_layout(title=title,
                      xaxis=dict(title="trial"), yaxis=dict(title="hypervolume", rangemode="tozero"),
                      template="plotly_white", height=360)
    return fig


STATE_COLOURS = {"complete": "#2ca02c", "rejected": "#aaaaaa", "replaced": "#c7b8e0", "fail": "#d62728",
                 "running": "#1f77b4", "pruned": "#ff7f0e", "waiting": "#dddddd"}


def timeline_figure(trials):
    """One segment per trial from its start to its end (now, while it runs), coloured by state."""
    import plotly.graph_objects as go
    now = datetime.now()
    fig = go.Figure()
    by_state: dict[str, list] = {}
    for t in trials:
        if t.datetime_start is None:
            continue
        by_state.setdefault(state_of(t), []).append(t)
    for state in STATE_COLOURS:
        rows = by_state.get(state, [])
        if not rows:
            continue
        xs, ys, text = [], [], []
        for t in rows:
            end = t.datetime_complete or now
            seconds = (end - t.datetime_start).total_seconds()
            r = TrialRecord.of(t)
            label = f"trial {t.number}: {state}" + (f", {r.family}" if r.family else "") + f", {seconds:.1f} s"
            if r.reference:
                label += f"<br>reference: {html.escape(r.reference)}"
            if r.reason:
                label += f"<br>{html.escape(r.reason)}"
            xs += [t.datetime_start.isoformat(), end.isoformat(), None]
            ys += [t.number, t.number, None]
            text += [label, label, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{state} ({len(rows)})",
                                 line=dict(color=STATE_COLOURS[state], width=6),
                                 marker=dict(color=STATE_COLOURS[state], size=5),
                                 hovertext=text, hoverinfo="text"))
    fig.update_layout(title="Timeline of trials (start to end, by state)", template="plotly_white", height=420,
                      xaxis=dict(title="time", type="date"), yaxis=dict(title="trial"), hovermode="closest")
    return fig


def graph_figure(g, resolution: int, num_classes: int = 1000):
    """The deployed network as a layered graph of ops (space.graph), sized to sit inside the report."""
    fig = space.graph.figure(space.to_graph(g, resolution, num_classes))
    fig.update_layout(width=None, height=min(4000, fig.layout.height), margin=dict(t=50))
    return fig
