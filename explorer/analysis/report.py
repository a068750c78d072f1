"""Browsing a study's results: the checks every view shares, and `explore report`'s page.

The report is one self-contained HTML file (plotly.js inlined once, no network
reference): the study's settings, the Pareto plot, a sortable table of the
Pareto genotypes (each with its nearest named architecture and a diff from it),
the hypervolume over trials, error EDFs by any genotype field (raw and
FLOP-normalised, with Kolmogorov-Smirnov statistics), the design axes that matter
(explorer.analysis.axes: importance, bootstrap good ranges, EDFs by axis), a timeline of every
trial with the failures and rejections and their reasons, and a network
graph of each Pareto genotype (collapsed; drawn when opened).
"""
from __future__ import annotations

import html
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna

import space
from space.graph import offline_html, without_cdn

from ..base import files
from ..base.errors import UserError
from ..base.ladder import describe
from ..base.settings import Settings
from ..studies.record import TrialRecord, counts, reason_of, state_of
from ..studies.storage import redact
from ..studies.store import load_study, metric_names, settings_of, storage_url, study_dir
from . import axes, axes_page, fidelity, pareto, stats, summary, topk
from .diff import genotype_diff
from .figures import budget_axis, graph_figure, hypervolume_figure, hypervolume_history, timeline_figure

States = optuna.trial.TrialState

# ---------------------------------------------------------------------------- opening a study


def open_results(study_name: str, storage: str | None):
    """(study, settings, completed points) of an existing study with results, else one clear UserError."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = load_study(study_name, storage)
    settings = settings_of(study)
    return study, settings, require_points(study, settings.objective)


def require_points(study, objective: str) -> list[pareto.Point]:
    """The completed trials' points; an empty study or one with only failures is an error, not an empty page."""
    pts = pareto.points(study, objective)
    if pts:
        return pts
    trials = study.get_trials(deepcopy=False)
    name = study.study_name
    failed = [t for t in trials if t.state == States.FAIL]
    if not trials:
        raise UserError(f"study '{name}' has no trials yet; run `explore search --study {name}` first")
    if failed and len(failed) == len([t for t in trials if t.state.is_finished()]):
        last = reason_of(failed[-1]) or "no reason recorded"
        raise UserError(f"study '{name}' has no completed trials: all {len(failed)} finished trials failed "
                        f"(last, trial {failed[-1].number}: {last})")
    said = ", ".join(f"{n} {state}" for state, n in sorted(counts(trials).items()))
    raise UserError(f"study '{name}' has no completed trials yet ({said}); "
                    f"run `explore search --study {name}` to train some")


def write_pareto_plot(study_name: str, settings: Settings, pts, x: str, png: Path | None = None,
                      force: bool = False) -> Path:
    """The study's plot page, studies/STUDY/pareto.html, with the x axis `x` shown first."""
    path = study_dir(study_name) / "pareto.html"
    pareto.write_plot(study_name, pts, path, x=x, resolution=settings.resolution, budget=settings.budget,
                      max_params=settings.max_params, png=png, force=force, latency_budget=settings.latency_budget)
    return path


# ---------------------------------------------------------------------------- the page


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _settings_rows(study, settings: Settings, url: str, pts: list[pareto.Point],
                   found: summary.Summary) -> list[tuple[str, str]]:
    recipe = ", ".join(f"{k} {v}" for k, v in settings.recipe.to_dict().items())
    return [("study", study.study_name), ("storage", redact(url)),
            ("space", f"{settings.space} (digest {settings.space_digest})"),
            ("budget", f"{settings.budget_text} at {settings.resolution}px, 1000 classes"),
            ("parameter cap", f"{settings.max_params:,}" if settings.max_params else "none"),
            ("dataset", settings.dataset),
            ("noise floor", pareto.noise_floor(pts) or "validation size not recorded"),
            ("proxy", found.proxy),
            ("recipe", recipe), ("sampler", f"{settings.sampler}, seed {settings.seed}"),
            ("completed trials aimed for", str(settings.trials)),
            ("rungs above the proxy (promotion)", describe(settings.rungs)),
            ("objectives", " / ".join(study.metric_names or metric_names(settings))),
            ("parameter names", "short" if settings.short_names else "document paths (made before short names)")] + [
        (key.replace("_", " "), "off" if value is None else str(value))
        for key, value in vars(settings).items() if key not in _SHOWN]


_SHOWN = {"space", "space_doc", "space_digest", "budget", "max_params", "resolution", "dataset", "proxy_resolution",
          "proxy_width", "proxy_depth", "train_images", "recipe", "sampler", "seed", "trials", "short_names", "rungs"}


def _fidelity(study) -> str:
    """`explore fidelity`'s result, when the study holds one."""
    record = fidelity.stored(study)
    if not record:
        return ""
    top = topk.telling(len(record.trials)) if record.top_k else []  # a record made before top-k has none
    rows = "".join(f"<tr><td>{_esc(name)}</td><td>{c['n']}</td><td>{_num(c.get('kendall_tau'))}</td>"
                   f"<td>{_num(c.get('spearman_rho'))}</td>"
                   + "".join(f"<td>{topk.shown(record.top_k[name][m])}</td>" for m in top) + "</tr>"
                   for name, c in record.correlations.items())
    head = "".join(f"<th>{_esc(m)}</th>" for m in ("ranked by", "n", "Kendall tau", "Spearman rho", *top))
    return (f"<h2>Proxy fidelity</h2><p class='note'>{len(record.trials)} trials retrained for "
            f"{record.reference.epochs} epochs; rank agreement with that longer training (<code>explore fidelity"
            "</code>), and the top of each ranking with bootstrap 95% intervals over the retrained trials"
            f"{': ' + _esc(topk.legend(top)) if top else ''}.</p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


TIES_NOTE = ("Each accuracy is its genotype's at its highest rung, ± its seed spread (never less than the "
             "validation's binomial error); \"tied with\" lists the front points whose ± intervals overlap it.")


def _pareto_table(found: summary.Summary) -> str:
    head = ["rank", "trial", "family", "GFLOPs", "M params", *(["ms (predicted)"] if found.timed else []),
            "accuracy ± noise", "tied with", "nearest named", "differences from it"]
    rows = []
    for r in found.front:
        p = r.point
        changes = genotype_diff(r.nearest, p.genotype) if r.nearest else []
        if not changes:
            shown = "<i>identical</i>" if r.nearest else ""
        else:
            items = "".join(f"<li><code>{_esc(c)}</code></li>" for c in changes[:8])
            more = ""
            if len(changes) > 8:
                more = (f"<details><summary>{len(changes) - 8} more</summary><ul>"
                        + "".join(f"<li><code>{_esc(c)}</code></li>" for c in changes[8:]) + "</ul></details>")
            shown = f"<ul class='diff'>{items}</ul>{more}"
        near_text = _esc(r.nearest) + (" (itself)" if r.itself else "")
        rung = f" <small>rung {p.rung}</small>" if p.rung else ""
        cells = [(r.rank, r.rank), (p.number, p.number), (p.family, _esc(p.family)), (p.flops, f"{p.flops / 1e9:.3f}"),
                 (p.params, f"{p.params / 1e6:.2f}"),
                 *([(p.latency_ms, f"{p.latency_ms:.2f}")] if found.timed else []),
                 (p.accuracy, _esc(p.shown) + rung), (len(r.tied_with), ", ".join(map(str, r.tied_with)) or "-"),
                 (r.nearest, near_text), (len(changes), shown)]
        rows.append("<tr>" + "".join(f"<td data-v='{_esc(v)}'>{text}</td>" for v, text in cells) + "</tr>")
    ths = "".join(f"<th title='sort'>{h}</th>" for h in head)
    return (f"<table id='pareto-table' class='sortable'><thead><tr>{ths}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _edf_section(pts, by_fields: list[str], figs: dict) -> str:
    samples = stats.samples_of(pts)
    if len(samples) < 2:
        return ("<p class='note'>Too few drawn trials for EDFs (reference points are not samples of the "
                "space); train more with <code>explore search</code>.</p>")
    parts = []
    for by in by_fields:
        groups = stats.group(samples, by)
        normed = stats.normalise(groups)
        raw_id, norm_id = f"edf-{_slug(by)}", f"edf-{_slug(by)}-norm"
        figs[raw_id] = stats.edf_figure(groups, by)
        figs[norm_id] = stats.edf_figure(normed, by, normalised=True)
        rows = "".join(
            f"<tr><td>{_esc(a)}</td><td>{_esc(b)}</td><td data-v='{d}'>{d:.3f}</td>"
            f"<td data-v='{dn}'>{dn:.3f}</td><td>{'' if p is None else f'{p:.3g}'}</td></tr>"
            for (a, b, d, p), (_, _, dn, _) in zip(stats.pairwise_ks(groups), stats.pairwise_ks(normed)))
        ks_table = ("<table class='sortable ks'><thead><tr><th>group</th><th>group</th><th>KS D</th>"
                    "<th>KS D, FLOP-normalised</th><th>p (raw)</th></tr></thead>"
                    f"<tbody>{rows}</tbody></table>" if rows else "<p class='note'>Only one group.</p>")
        parts.append(f"<h3>by {_esc(by)}</h3><div class='pair'><div id='{raw_id}' class='plot'></div>"
                     f"<div id='{norm_id}' class='plot'></div></div>{ks_table}")
    return "".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "x"


def _problems(trials) -> str:
    failed = [t for t in trials if t.state == States.FAIL]
    rejected = [t for t in trials if state_of(t) == "rejected"]
    out = []
    if failed:
        records = [TrialRecord.of(t) for t in failed]
        rows = "".join(f"<tr><td data-v='{r.number}'>{r.number}</td><td>{_esc(r.family or '')}</td>"
                       f"<td>{_esc(r.reference or '')}</td><td>{_esc(r.reason or 'no reason recorded')}</td></tr>"
                       for r in records)
        out.append(f"<h3>Failed trials ({len(failed)})</h3><table class='sortable' id='failed-table'><thead><tr>"
                   f"<th>trial</th><th>family</th><th>reference</th><th>reason</th></tr></thead><tbody>{rows}</tbody>"
                   "</table>")
    if rejected:
        kinds = Counter(reason_of(t).split(":", 1)[0] for t in rejected)
        summary = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        rows = "".join(f"<tr><td data-v='{t.number}'>{t.number}</td><td>{_esc(reason_of(t))}</td></tr>"
                       for t in rejected)
        out.append(f"<h3>Rejected draws ({len(rejected)}: {_esc(summary)})</h3><details><summary>every rejection and "
                   f"its reason</summary><table class='sortable' id='rejected-table'><thead><tr><th>trial</th>"
                   f"<th>reason</th></tr></thead><tbody>{rows}</tbody></table></details>")
    return "".join(out) or "<p class='note'>No failures and no rejected draws.</p>"


def _graphs(front: list[pareto.Point], settings: Settings, figs: dict) -> str:
    out = []
    for p in front:  # most accurate first
        fid = f"graph-{p.number}"
        g = space.load(p.genotype)
        try:
            figs[fid] = graph_figure(g, settings.resolution)
            body = f"<div id='{fid}' class='plot graph'></div>"
        except space.GenotypeError as e:  # can't happen for a priced trial, but never break the page
            body = f"<p class='note'>no graph: {_esc(e)}</p>"
        label = f" ({_esc(p.label)})" if p.label else ""
        out.append(f"<details class='graph' data-fig='{fid}'><summary>trial {p.number}{label}: {_esc(p.family)}, "
                   f"{p.flops / 1e9:.3f} GFLOPs, accuracy {p.accuracy:.4f}, {_esc(pareto.summary(p.genotype))}"
                   f"</summary>{body}<details><summary>genotype (YAML)</summary><pre>{_esc(space.to_yaml(g))}</pre>"
                   "</details></details>")
    return "".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;
padding:0 16px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0;font-size:14px} td,th{border:1px solid #ddd;padding:4px 8px;
vertical-align:top;text-align:left} th{background:#f4f4f4} table.sortable th{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
ul.diff{margin:0;padding-left:16px} code,pre{font-size:12px} .note{color:#666}
.pair{display:flex;flex-wrap:wrap;gap:8px} .pair .plot{flex:1 1 600px;min-width:400px}
details.graph{margin:6px 0} details.graph>summary{cursor:pointer} pre{background:#f8f8f8;padding:8px;overflow:auto}
"""

JS = """
const FIGS = JSON.parse(document.getElementById('figures').textContent);
const CONFIG = {displaylogo: false, responsive: true};
function draw(id) {
  const el = document.getElementById(id);
  if (!el || el.dataset.drawn) return;
  el.dataset.drawn = '1';
  const f = FIGS[id];
  Plotly.newPlot(el, f.data, f.layout, Object.assign({scrollZoom: el.classList.contains('graph')}, CONFIG));
}
for (const id of Object.keys(FIGS)) { if (!document.getElementById(id).closest('details')) draw(id); }
document.querySelectorAll('details[data-fig]').forEach(d => d.addEventListener('toggle', () => {
  if (d.open) draw(d.dataset.fig);
}));
function cellValue(row, i) {
  const v = row.cells[i].dataset.v ?? row.cells[i].textContent;
  const n = parseFloat(v);
  return (v !== '' && !isNaN(n) && isFinite(v)) ? n : v.toLowerCase();
}
document.querySelectorAll('table.sortable').forEach(table => {
  table.querySelectorAll('thead th').forEach((th, i) => th.addEventListener('click', () => {
    const asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('thead th').forEach(h => h.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = cellValue(a, i), y = cellValue(b, i);
      const c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  }));
});
"""


def _figures_json(figs: dict) -> str:
    import plotly.io as pio
    body = ",".join(f"{json.dumps(fid)}:{pio.to_json(fig, validate=False)}" for fid, fig in figs.items())
    return ("{" + body + "}").replace("</", "<\\/")


def plotly_js() -> str:
    """plotly.js, to inline, with no network reference."""
    from plotly.offline import get_plotlyjs
    return without_cdn(get_plotlyjs())


def build(study, settings: Settings, pts: list[pareto.Point], url: str, by: list[str] | None = None) -> str:
    """The report page's HTML."""
    by = by or ["family"]
    for field in by:
        stats.check_field(field)
    trials = study.get_trials(deepcopy=False)
    found = summary.summarise(study, settings, pts)
    figs: dict[str, Any] = {}
    figs["pareto"] = pareto.figure(study.study_name, pts, found.axis, settings.resolution, settings.budget,
                                   settings.max_params, settings.latency_budget)
    axis, budget = budget_axis(settings)
    numbers, values = hypervolume_history(pts, budget, axis)
    figs["hypervolume"] = hypervolume_figure(numbers, values, axis)
    edfs = _edf_section(pts, by, figs)
    figs["timeline"] = timeline_figure(trials)
    graphs = _graphs([r.point for r in found.front], settings, figs)
    settings_html = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
                            for k, v in _settings_rows(study, settings, url, pts, found))
    hv = values[-1] if values else 0.0
    dashboard = f"optuna-dashboard {redact(url)}"
    sampler_note = ("" if settings.sampler == "random" else
                    f" The {_esc(settings.sampler)} sampler steers its draws, so these describe the trials this "
                    "study drew rather than uniform samples of the space (NDS samples at random: "
                    "<code>--sampler random</code>).")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(study.study_name)}: explore report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style>
<script>{plotly_js()}</script></head>
<body>
<h1>{_esc(study.study_name)}</h1>
<p class="note">explore report, {datetime.now():%Y-%m-%d %H:%M}. {found.states.get('complete', 0)} completed,
{found.states.get('rejected', 0)} draws rejected before training, {found.states.get('fail', 0)} failed,
{found.states.get('running', 0)} running. FLOPs are multiply-adds of the deployed network
({settings.resolution}px, 1000 classes); accuracy is the proxy's validation accuracy on {_esc(settings.dataset)}.</p>
<h2>Settings</h2><table id="settings">{settings_html}</table>
<h2>Pareto front</h2><div id="pareto" class="plot"></div>
<h3>Pareto genotypes ({len(found.front)}, on {_esc(pareto.AXIS_TITLES[found.axis])})</h3>
<p class="note">Click a header to sort. Differences are from the nearest named architecture to the genotype
(<code>path: theirs → this</code>). {TIES_NOTE}</p>
{_pareto_table(found)}
<h2>Hypervolume</h2><p>Now {hv:.4f} of the box from (accuracy 0, {_esc(pareto.AXIS_TITLES[axis])} 0) to
(accuracy 1, budget).</p>
<div id="hypervolume" class="plot"></div>
<h2>Error EDFs</h2>
<p class="note">Error = 1 - proxy accuracy; F(e) is the fraction of a group's models with error at most e
(Radosavovic et al., 2019). FLOP-normalised EDFs reweight each group to the same log-FLOPs distribution.
Reference points are left out.{sampler_note}</p>
{edfs}<h2>Design axes</h2>{axes_page.section(axes.read_samples(study), figs)}
{_fidelity(study)}
<h2>Trials over time</h2><div id="timeline" class="plot"></div>
{_problems(trials)}
<h2>Networks on the front</h2><p class="note">The deployed network of each Pareto genotype; open one to draw it.</p>
{graphs}
<h2>More</h2><p>Browse every trial, its parameters and attributes with
<a href="https://github.com/optuna/optuna-dashboard">optuna-dashboard</a>: <code>{_esc(dashboard)}</code></p>
<script type="application/json" id="figures">{_figures_json(figs)}</script>
<script>{JS}</script>
</body></html>
"""


def write_report(study_name: str, storage: str | None, by: list[str] | None = None, path: Path | None = None,
                 force: bool = False) -> Path:
    """studies/STUDY/report.html, regenerated freely; or `path`, which is replaced only with `force`."""
    study, settings, pts = open_results(study_name, storage)
    url = storage or storage_url(study_name, None)
    page = build(study, settings, pts, url, by)
    if path is not None:
        return files.write(Path(path), page, "path", force=force)
    return files.write(study_dir(study_name) / "report.html", page, "report", own=True)


def write_edf(study_name: str, storage: str | None, by: list[str], normalised: bool):
    """edf.html for `explore edf`, and the groups and KS statistics to print."""
    study, settings, pts = open_results(study_name, storage)
    samples = stats.samples_of(pts)
    if len(samples) < 2:
        raise UserError(f"study '{study_name}' has {len(samples)} drawn trial(s) completed; EDFs need at least 2 "
                        "(reference points are not samples of the space)")
    results, figs = [], []
    for field in by:
        groups = stats.group(samples, field)
        if normalised:
            groups = stats.normalise(groups)
        results.append((field, groups, stats.pairwise_ks(groups)))
        figs.append(stats.edf_figure(groups, field, normalised,
                                     title=f"{study_name}: {'FLOP-normalised ' if normalised else ''}error EDF "
                                           f"by {field}"))
    path = study_dir(study_name) / "edf.html"
    if len(figs) == 1:
        files.write(path, offline_html(figs[0]), "edf", own=True)
    else:
        import plotly.io as pio
        divs = "".join(pio.to_html(f, include_plotlyjs=False, full_html=False, config={"displaylogo": False})
                       for f in figs)
        files.write(path, f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(study_name)}: EDFs</title>"
                        f"<script>{plotly_js()}</script></head><body>{divs}</body></html>", "edf", own=True)
    return path, results
