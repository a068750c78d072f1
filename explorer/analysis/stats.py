"""Design-space statistics after Radosavovic et al., "On Network Design Spaces for Visual Recognition" (NDS, 2019).

An error EDF (empirical distribution function) of a group of models gives, for
each error e, the fraction of the group with error at most e: F(e) = sum_i w_i [e_i <= e]
(weights sum to 1). The error is 1 - proxy validation accuracy.

Groups come from a genotype field (`--by`): a derived one (see DERIVED), a
top-level field of the genotype (`act`, `norm`, `width`, ...) or a path into it
(`stages[2].blocks[0].repeat`, `head.dropout`).

FLOP normalisation (NDS section 4): groups that differ in complexity differ in
error for that reason alone, so each group is reweighted to the same FLOP
distribution. The pooled log10(FLOPs) range is cut into equal-width bins; a
model in bin b of group g gets weight p(b) / n_g(b), where p(b) is the share of
all models (every group pooled) in bin b and n_g(b) the group's count there;
then each group's weights are rescaled to sum to 1 (a bin a group never drew
can't be matched and drops out of that group's target).

The Kolmogorov-Smirnov statistic D = max_e |F_1(e) - F_2(e)| compares two
groups' (weighted) EDFs; unweighted, it equals scipy.stats.ks_2samp's.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from space import schema as S
from space.axes import DERIVED, FIELD_PATH

from ..base.errors import UserError
from .pareto import PALETTE, family_colours, family_sort


def check_field(by: str) -> str:
    """The field name if it can group genotypes, else a UserError naming the choices."""
    top = by.split(".", 1)[0].split("[", 1)[0]
    if by in DERIVED or (FIELD_PATH.match(by) and top in S.Genotype.model_fields):
        return by
    raise UserError(f"--by: unknown field '{by}'; use one of {', '.join(DERIVED)}, a top-level genotype field "
                    f"({', '.join(f for f in S.Genotype.model_fields if f not in DERIVED)}) "
                    "or a path such as stages[2].blocks[0].repeat")


def _lookup(doc: Any, path: str) -> Any:
    node = doc
    for part in re.findall(r"\w+|\[\d+\]", path):
        if part.startswith("["):
            i = int(part[1:-1])
            if not isinstance(node, list) or i >= len(node):
                return None
            node = node[i]
        else:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
    return node


def field_value(g: S.Genotype, by: str) -> str:
    """The group a genotype falls in for `by` (a derived field, a top-level field or a path), as text."""
    if by in DERIVED:
        return DERIVED[by][1](g)
    value = _lookup(g.model_dump(mode="json"), by)  # defaults included: an omitted field has its default
    if value is None:
        return "(absent)"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"))
        return text if len(text) <= 48 else text[:45] + "..."
    return str(value)


def _natural(label: str):
    """Sort groups numerically where they are numbers ('x0.5', '3-4', '12'), else alphabetically."""
    m = re.match(r"^x?(-?\d+(?:\.\d+)?)", label)
    return (0, float(m.group(1)), label) if m else (1, 0.0, label)


# ---------------------------------------------------------------------------- EDFs


@dataclass
class Group:
    label: str
    errors: np.ndarray
    flops: np.ndarray
    numbers: list[int] = field(default_factory=list)  # trial numbers
    weights: np.ndarray | None = None                 # None: each model weighs 1/n

    @property
    def n(self) -> int:
        return len(self.errors)

    @property
    def w(self) -> np.ndarray:
        return self.weights if self.weights is not None else np.full(self.n, 1.0 / max(self.n, 1))

    @property
    def min(self) -> float:
        used = self.errors[self.w > 0]
        return float(used.min()) if len(used) else math.nan

    @property
    def mean(self) -> float:
        return float(np.sum(self.w * self.errors)) if self.n else math.nan

    def legend(self) -> str:
        return f"{self.label} (n={self.n}, min {self.min:.3f}, mean {self.mean:.3f})"


def group(samples: list[tuple[int, S.Genotype, float, int]], by: str) -> list[Group]:
    """Samples (trial number, genotype, error, FLOPs) split by a field, groups in natural order."""
    check_field(by)
    parts: dict[str, list] = {}
    for number, g, error, flops in samples:
        parts.setdefault(field_value(g, by), []).append((number, error, flops))
    if by == "family":
        labels = family_sort(parts)
    else:
        labels = sorted(parts, key=_natural)
    return [Group(label, np.array([e for _, e, _ in parts[label]], float),
                  np.array([f for _, _, f in parts[label]], float), [n for n, _, _ in parts[label]])
            for label in labels]


def edf(errors: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The EDF's steps: sorted distinct errors and F at each (fraction with error <= e)."""
    errors = np.asarray(errors, float)
    weights = np.full(len(errors), 1.0 / max(len(errors), 1)) if weights is None else np.asarray(weights, float)
    order = np.argsort(errors, kind="stable")
    xs, ws = errors[order], weights[order]
    keep = ws > 0
    xs, ws = xs[keep], ws[keep]
    total = ws.sum()
    if not len(xs) or total <= 0:
        return np.array([]), np.array([])
    cum = np.cumsum(ws) / total
    last = np.r_[xs[1:] != xs[:-1], True]  # one step per distinct error, at its top
    return xs[last], cum[last]


def cdf_at(errors, weights, at: np.ndarray) -> np.ndarray:
    xs, ys = edf(errors, weights)
    if not len(xs):
        return np.zeros(len(at))
    idx = np.searchsorted(xs, at, side="right") - 1
    return np.where(idx >= 0, ys[np.clip(idx, 0, None)], 0.0)


def ks(a: Group, b: Group) -> float:
    """Kolmogorov-Smirnov statistic between two groups' (weighted) error EDFs."""
    if not a.n or not b.n:
        return math.nan
    at = np.union1d(a.errors, b.errors)
    return float(np.max(np.abs(cdf_at(a.errors, a.weights, at) - cdf_at(b.errors, b.weights, at))))


def ks_pvalue(a: Group, b: Group) -> float | None:
    """scipy's two-sample KS p-value for unweighted groups (None when weighted or scipy is missing)."""
    if a.weights is not None or b.weights is not None or a.n < 1 or b.n < 1:
        return None
    try:
        from scipy.stats import ks_2samp
    except ImportError:  # scipy comes with scikit-learn, but don't insist
        return None
    return float(ks_2samp(a.errors, b.errors).pvalue)


def flop_bins(groups: list[Group], bins: int | None = None) -> np.ndarray:
    """Equal-width log10(FLOPs) bin edges over every group's models together."""
    logs = np.log10(np.concatenate([g.flops for g in groups if g.n]) if groups else np.array([1.0]))
    n = len(logs)
    bins = bins or int(min(8, max(1, round(math.sqrt(n / 2)))))
    lo, hi = float(logs.min()), float(logs.max())
    if hi - lo < 1e-9:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, bins + 1)


def normalise(groups: list[Group], bins: int | None = None) -> list[Group]:
    """The groups reweighted to one FLOP distribution (the pooled one over log-FLOPs bins)."""
    edges = flop_bins(groups, bins)
    nb = len(edges) - 1

    def bin_of(flops):
        return np.clip(np.searchsorted(edges, np.log10(flops), side="right") - 1, 0, nb - 1)

    pooled = np.bincount(np.concatenate([bin_of(g.flops) for g in groups]), minlength=nb).astype(float)
    target = pooled / pooled.sum()
    out = []
    for g in groups:
        b = bin_of(g.flops)
        counts = np.bincount(b, minlength=nb).astype(float)
        w = target[b] / counts[b]
        w = w / w.sum() if w.sum() > 0 else w
        out.append(Group(g.label, g.errors, g.flops, g.numbers, w))
    return out


def pairwise_ks(groups: list[Group]) -> list[tuple[str, str, float, float | None]]:
    """(a, b, D, p) for every pair of groups with models in both."""
    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            if a.n and b.n:
                rows.append((a.label, b.label, ks(a, b), ks_pvalue(a, b)))
    return rows


# ---------------------------------------------------------------------------- figures


def samples_of(pts) -> list[tuple[int, S.Genotype, float, int]]:
    """(trial number, genotype, error, FLOPs) of the drawn trials; reference points are not samples."""
    return [(p.number, S.load(p.genotype), 1.0 - p.accuracy, p.flops) for p in pts if not p.reference]


def edf_figure(groups: list[Group], by: str, normalised: bool = False, title: str | None = None):
    """Error EDFs, one step line per group, n / min / mean in the legend."""
    import plotly.graph_objects as go

    colours = (family_colours([g.label for g in groups]) if by == "family"
               else {g.label: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)})
    fig = go.Figure()
    right = max((float(g.errors.max()) for g in groups if g.n), default=1.0)
    for g in groups:
        xs, ys = edf(g.errors, g.weights)
        if not len(xs):
            continue
        # from (first error, 0) up each step, then flat at 1 to the largest error of any group
        fig.add_trace(go.Scatter(
            x=np.r_[xs[0], xs, right].tolist(), y=np.r_[0.0, ys, 1.0].tolist(), mode="lines", name=g.legend(),
            meta=g.label,
            line=dict(shape="hv", width=2, color=colours[g.label]),
            hovertemplate=f"{g.label}<br>error %{{x:.4f}}<br>F = %{{y:.3f}}<extra></extra>"))
    pairs = pairwise_ks(groups)
    sub = ""
    if len(pairs) == 1:
        a, b, d, p = pairs[0]
        sub = f"<br><sup>KS statistic {a} vs {b}: D = {d:.3f}" + (f", p = {p:.3g}" if p is not None else "") + "</sup>"
    kind = "FLOP-normalised error EDF" if normalised else "error EDF"
    fig.update_layout(title=(title or f"{kind} by {by}") + sub, template="plotly_white",
                      height=420 + 20 * len(groups), margin=dict(b=60 + 20 * len(groups)),
                      xaxis=dict(title="error (1 - proxy validation accuracy)"),
                      yaxis=dict(title="cumulative fraction of models" + (" (FLOP-weighted)" if normalised else ""),
                                 range=[0, 1.02]),
                      legend=dict(title=by, yanchor="top", y=-0.16, xanchor="left", x=0))
    return fig
