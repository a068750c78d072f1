"""`explore axes`, `explore refine` and `explore compare`: from a study to a better space, measured
(explorer.analysis.axes, refine and compare do the work; this prints it)."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..analysis import axes, compare, refine
from ..base import files


def _row(f: axes.Finding) -> list[str]:
    good = f.range_text() if not f.note else ""
    importance = "" if f.importance is None else f"{f.importance:.3f}"
    ks = "" if f.ks is None else f"{f.ks:.3f}"
    p = "" if f.p is None else f"{f.p:.2g}"
    return [f.name, str(f.trials), importance, good, ks, p, f.note]


def findings_table(title: str, findings: list[axes.Finding]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("name", "trials", "importance", "good range (95%) / good options (share best)", "KS D", "p", "note"):
        table.add_column(col, justify="right" if col in ("trials", "importance", "KS D", "p") else "left")
    for f in findings:
        table.add_row(*_row(f))
    return table


def axes_command(study: str, storage: str | None, seed: int, raw: bool, min_trials: int, as_json: bool,
                 console: Console) -> None:
    _, _, samples = axes.open_samples(study, storage, min_trials)
    analysis = axes.analyse(study, samples, seed, raw)
    if as_json:
        print(json.dumps(analysis.to_json(), indent=2, default=str))
        return
    error = "error" if raw else "error relative to trials of like FLOPs (multiply-adds)"
    edfs = "unweighted" if raw else "FLOP-normalised"
    console.print(f"{study}: {analysis.trials} completed drawn trials, ranked by {error}; importance is PED-ANOVA's "
                  "(shares summing to 1: how far the best tenth's values depart from all trials'); KS compares "
                  f"the {edfs} error EDFs inside and outside the good range",
                  highlight=False, soft_wrap=True)
    console.print(findings_table("design axes", analysis.axes))
    console.print(findings_table("space parameters", analysis.parameters))


def refine_command(study: str, output: Path, storage: str | None, seed: int, raw: bool, min_trials: int,
                   force: bool, console: Console) -> None:
    files.check_target(output, force, "-o")  # before any work: an existing file is refused at once
    _, settings, samples = axes.open_samples(study, storage, min_trials)
    refine.stored_space(study, settings)
    analysis = axes.analyse(study, samples, seed, raw)
    reasons = refine.write_refined(output, study, settings, analysis, force)
    for reason in reasons:
        console.print(f"  {reason}", highlight=False, soft_wrap=True)
    console.print(f"refined space: {output} ({len(reasons)} parameter(s) narrowed, from {analysis.trials} trials); "
                  f"search it with `explore search --space {output} --budget ...`", highlight=False, soft_wrap=True)


def compare_command(studies: list[str], storage: str | None, output: Path | None, force: bool,
                    console: Console) -> Path:
    if output is not None:
        files.check_target(output, force, "-o")
    groups, raw, verdicts, notes = compare.compare(studies, storage)
    by_label = {g.label: g for g in groups}
    for note in notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for v in verdicts:
        console.print(v.line(by_label), highlight=False, soft_wrap=True)
    path = compare.write_page(studies, compare.figures(groups, raw, verdicts), output, force)
    console.print(f"EDFs: {path}", highlight=False, soft_wrap=True)
    return path
