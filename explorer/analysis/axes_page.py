"""The report's "Design axes" section: `explore axes`'s findings as tables, and each axis's error EDFs
split by its values (FLOP-normalised), drawn when opened."""
from __future__ import annotations

import html

from ..base.settings import REFINE_MIN_TRIALS
from . import axes, stats


def _cell(value, text: str | None = None) -> str:
    shown = html.escape(text if text is not None else str(value))
    return f"<td data-v='{html.escape(str(value), quote=True)}'>{shown}</td>"


def _table(table_id: str, findings: list[axes.Finding]) -> str:
    head = ("<tr><th>name</th><th>trials</th><th>importance</th><th>good range (95%) / good options "
            "(share best)</th><th>KS D in vs out</th><th>p</th><th>note</th></tr>")
    rows = []
    for f in findings:
        imp = "" if f.importance is None else f"{f.importance:.3f}"
        rows.append("<tr>" + _cell(f.name) + _cell(f.trials) + _cell(f.importance or 0, imp)
                    + _cell("" if f.note else f.range_text()) + _cell("" if f.ks is None else f"{f.ks:.3f}")
                    + _cell("" if f.p is None else f"{f.p:.2g}") + _cell(f.note) + "</tr>")
    return f"<table id='{table_id}' class='sortable'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def section(samples: list[axes.Sample], figs: dict, seed: int = 0) -> str:
    """The section's HTML; the EDF figures go into `figs` under axis-NAME."""
    if len(samples) < REFINE_MIN_TRIALS:
        return (f"<p class='note'>{len(samples)} completed drawn trials; good ranges need at least "
                f"{REFINE_MIN_TRIALS} (<code>explore axes</code>, <code>explore refine</code>).</p>")
    analysis = axes.analyse("", samples, seed)
    edfs = []
    for axis in axes.AXES:
        groups = axes.split_groups(samples, axis)
        if len(groups) < 2:
            continue
        fid = f"axis-{axis}"
        figs[fid] = stats.edf_figure(groups, axis, normalised=True)
        edfs.append(f"<details data-fig='{fid}'><summary>error EDFs by {axis}</summary>"
                    f"<div id='{fid}' class='plot'></div></details>")
    return (f"<p class='note'>Which design choices matter, from the {analysis.trials} drawn trials (seed {seed}): "
            "importance is PED-ANOVA's (how far the values of the best tenth of the trials, by error relative to "
            "trials of like FLOPs, depart from all trials'; shares summing to 1); "
            "the good range is pycls's bootstrap (the best of a quarter of the trials, resampled); KS compares "
            "the FLOP-normalised error EDFs inside and outside it. <code>explore refine</code> writes the "
            "narrowed space.</p>" + _table("axes-table", analysis.axes)
            + "<details><summary>every space parameter</summary>" + _table("parameters-table", analysis.parameters)
            + "</details>" + "".join(edfs))
