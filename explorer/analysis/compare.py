"""Which space is better: `explore compare`. The studies' error EDFs overlaid, complexity-normalised as NDS
does (each study reweighted to the pooled log-FLOPs distribution of all of them, explorer.analysis.stats),
with the KS statistic and p-value of each study against the first (explorer.analysis.axes.weighted_ks) and
a one-line verdict. The studies may come from different spaces: only their errors and FLOPs are compared;
settings that change what an accuracy means (dataset, proxy, recipe, budget) are named where they differ.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base import files
from ..base.errors import UserError
from ..studies.store import study_dir
from . import stats
from .axes import Sample, open_samples, weighted_ks
from .report import plotly_js

SIGNIFICANCE = 0.05
MIN_TRIALS = 2  # an EDF of one trial is a single step


@dataclass
class Verdict:
    baseline: str
    other: str
    d: float          # KS statistic between the FLOP-normalised error EDFs
    p: float | None   # its asymptotic p-value at the effective sample sizes
    better: str | None
    dominates: bool   # the better one's EDF is at or above the other's at every error

    def line(self, groups: dict[str, stats.Group]) -> str:
        a, b = groups[self.baseline], groups[self.other]
        sizes = (f"n: {b.label} {b.n}, {a.label} {a.n}; mean error (FLOP-weighted): {b.label} {b.mean:.4f}, "
                 f"{a.label} {a.mean:.4f}")
        test = f"KS D {self.d:.3f}, p {self.p:.2g}"
        if self.better is None:
            return f"{self.other} vs {self.baseline}: no significant difference ({test}; {sizes})"
        worse = self.baseline if self.better == self.other else self.other
        how = "dominates" if self.dominates else "lies above at the largest gap of"
        return f"{self.better} is better: its FLOP-normalised error EDF {how} {worse}'s ({test}; {sizes})"


def verdict(a: stats.Group, b: stats.Group, alpha: float = SIGNIFICANCE) -> Verdict:
    """Is b's error EDF better than a's (more of its models at low error), and is the gap significant?"""
    d, p = weighted_ks(a, b)
    at = np.union1d(a.errors, b.errors)
    gap = stats.cdf_at(b.errors, b.weights, at) - stats.cdf_at(a.errors, a.weights, at)
    better = None
    if p is not None and p < alpha:
        better = b.label if gap[np.argmax(np.abs(gap))] > 0 else a.label
    sign = 1 if better == b.label else -1
    return Verdict(a.label, b.label, d, p, better, better is not None and bool(np.all(sign * gap >= -1e-12)))


def groups_of(studies: list[tuple[str, list[Sample]]], raw: bool = False) -> list[stats.Group]:
    groups = [stats.Group(name, np.array([s.error for s in samples]), np.array([s.flops for s in samples], float),
                          [s.number for s in samples]) for name, samples in studies]
    return groups if raw else stats.normalise(groups)


def compare(names: list[str], storage: str | None):
    """The studies' groups (FLOP-normalised), the raw ones, each study's verdict against the first, and notes."""
    if len(set(names)) < 2:
        raise UserError("STUDIES: name at least two different studies to compare")
    opened = [open_samples(name, storage, MIN_TRIALS, "error EDFs") for name in names]
    studies = [(name, samples) for name, (_, _, samples) in zip(names, opened)]
    groups, raw = groups_of(studies), groups_of(studies, raw=True)
    verdicts = [verdict(groups[0], g) for g in groups[1:]]
    first = opened[0][1]
    notes = []
    for name, (_, settings, _) in zip(names[1:], opened[1:]):
        # another space is what is compared, and another seed only another draw (of trials and validation split)
        diffs = [d for d in settings.differences(first) if not d.startswith(("space ", "seed "))]
        if diffs:
            notes.append(f"{name} differs from {names[0]} in more than its space ({'; '.join(diffs)}): "
                         "its accuracies may not compare")
    return groups, raw, verdicts, notes


def figures(groups: list[stats.Group], raw: list[stats.Group], verdicts: list[Verdict]) -> list:
    by_label = {g.label: g for g in groups}
    lines = "<br>".join(f"<sup>{v.line(by_label)}</sup>" for v in verdicts)
    return [stats.edf_figure(groups, "study", normalised=True,
                             title=f"FLOP-normalised error EDFs (NDS)<br>{lines}"),
            stats.edf_figure(raw, "study", title="error EDFs, unweighted")]


def write_page(names: list[str], figs: list, output: Path | None, force: bool) -> Path:
    """compare.html in the first study's folder (regenerated freely), or `output` (replaced only with force)."""
    import plotly.io as pio  # plotly loads when a page is drawn, as elsewhere
    divs = "".join(pio.to_html(f, include_plotlyjs=False, full_html=False, config={"displaylogo": False})
                   for f in figs)
    title = html.escape(" vs ".join(names))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}: compare</title>"
            f"<script>{plotly_js()}</script></head><body>{divs}</body></html>")
    if output is None:
        return files.write(study_dir(names[0]) / "compare.html", page, "compare", own=True)
    return files.write(output, page, "-o", force)
