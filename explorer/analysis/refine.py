"""A narrower space from a study: `explore refine`. The study's own space document is rewritten in the
same grammar (a valid `--space`): each range narrowed to its bootstrap good range, each choice's options
that were never good dropped (explorer.analysis.axes says how "good" is found). Every narrowing is
explained in a comment line at the top of the file: the evidence and how many trials it rests on.

What it leaves as it is: a parameter fewer than PARAM_MIN_TRIALS trials took, and an option no trial took
(no evidence either way). Choices keep their names and labels (a choice cut to one option stays a choice),
so the refined space's parameters are the original's and its trials compare with the study's. Tied
choices (one `name:`) share one parameter and are narrowed alike. Constraints across parameters (RegNet's
shared group width or widths that grow stage by stage) are not written: the grammar ties equal values
but has no ordering between parameters.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from space.errors import GenotypeError
from space.sampling import PRIMITIVE, check_space, is_range, load_space, option_labels, rewrite

from ..base import files
from ..base.errors import UserError
from ..base.settings import BOOTSTRAP
from .axes import Analysis, Finding


def stored_space(study_name: str, settings) -> dict:
    """The study's space document, checked; a lost or broken one is one UserError."""
    doc = settings.space_doc
    try:
        if doc is None:
            raise GenotypeError("space", "no space document is stored")
        return check_space(copy.deepcopy(doc))
    except (GenotypeError, RecursionError, TypeError) as e:
        raise UserError(f"study '{study_name}': its stored space can't be read ({e}); refine a study made "
                        "by `explore search`") from None


def narrow(name: str, node: dict, finding: Finding | None) -> tuple[dict, str]:
    """The node narrowed by its finding, and the comment that says why ("" when it stays)."""
    if finding is None or finding.note:
        return node, ""
    if is_range(node):
        return _narrow_range(name, node, finding)
    return _narrow_choice(name, node, finding)


def _narrow_range(name: str, node: dict, f: Finding) -> tuple[dict, str]:
    lo, hi = node["range"]
    new = [max(lo, f.low), min(hi, f.high)]
    if new == [lo, hi] or new[0] > new[1]:
        return node, ""
    why = (f"{name}: range [{lo:g}, {hi:g}] -> [{new[0]:g}, {new[1]:g}]: the central "
           f"{BOOTSTRAP['interval']:.0%} of the best trial's value in {BOOTSTRAP['resamples']:,} resamples of "
           f"{BOOTSTRAP['share']:.0%} of the {f.trials} trials that took it (median {f.median:g})" + _ks(f))
    return {**node, "range": new}, why


def _narrow_choice(name: str, node: dict, f: Finding) -> tuple[dict, str]:
    labels = option_labels(node)
    good = {str(v) for v in f.good}
    keep = [i for i, label in enumerate(labels) if str(label) in good or str(label) not in f.shares]
    if len(keep) == len(labels) or not keep:
        return node, ""
    dropped = [labels[i] for i in range(len(labels)) if i not in keep]
    new = {**node, "choice": [node["choice"][i] for i in keep]}
    if not all(isinstance(o, PRIMITIVE) for o in node["choice"]):
        new["labels"] = [labels[i] for i in keep]  # the kept options' own labels: parameter names stay as they were
    shares = ", ".join(f"{label} {f.shares.get(str(label), 0):.1%}" for label in labels)
    why = (f"{name}: dropped {', '.join(map(str, dropped))}: the best trial's option in {BOOTSTRAP['resamples']:,} "
           f"resamples of {BOOTSTRAP['share']:.0%} of the {f.trials} trials that took it: {shares} "
           f"(kept: at least {(1 - BOOTSTRAP['interval']) / 2:.1%}, or never taken)" + _ks(f))
    return new, why


def _ks(f: Finding) -> str:
    if f.ks is None:
        return ""
    return f"; error EDFs inside vs outside: KS D {f.ks:.3f}, p {f.p:.2g}"


def refine_space(doc: dict, analysis: Analysis, short: bool) -> tuple[dict, list[str]]:
    """The space narrowed by the analysis, and one comment line per narrowed parameter."""
    reasons: dict[str, str] = {}

    def change(name: str, node: dict) -> dict:
        new, why = narrow(name, node, analysis.parameter(name))
        if why:
            reasons[name] = why
        return new

    refined = rewrite(doc, change, short)
    return refined, list(reasons.values())


class _Plain(yaml.SafeDumper):
    """YAML without anchors: a repeated sub-document is written out each time, as a reader expects."""

    def ignore_aliases(self, data) -> bool:
        return True


def document(refined: dict, reasons: list[str], header: list[str]) -> str:
    comments = [*header, *(f"- {r}" for r in reasons)]
    body = yaml.dump(refined, Dumper=_Plain, sort_keys=False, default_flow_style=None, width=120)
    return "".join(f"# {line}\n" for line in comments) + body


def header_of(study_name: str, settings, analysis: Analysis) -> list[str]:
    error = "error" if analysis.raw else "error relative to the mean error of trials of like FLOPs (multiply-adds)"
    return [f"Refined by `explore refine {study_name} --seed {analysis.seed}` from space {settings.space} "
            f"(digest {settings.space_digest}),",
            f"on {analysis.trials} completed drawn trials (reference points left out); trials ranked by {error}.",
            "Good ranges after pycls: resample a quarter of the trials, keep the best one's value, many times.",
            "Narrowed:"]


def write_refined(path: Path, study_name: str, settings, analysis: Analysis, force: bool) -> list[str]:
    """Write the refined space to `path` (checked to load as a space first); the narrowings made."""
    doc = stored_space(study_name, settings)
    refined, reasons = refine_space(doc, analysis, settings.short_names)
    if not reasons:
        raise UserError(f"study '{study_name}': nothing to narrow: every range's good range spans it and every "
                        f"option was good in {analysis.trials} trials; search it longer or refine another study")
    text = document(refined, reasons, header_of(study_name, settings, analysis))

    def checked(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        try:
            load_space(tmp)
        except GenotypeError as e:  # never write a space `--space` would refuse
            raise UserError(f"-o: the refined space doesn't load ({e}); nothing written") from None

    files.write(path, checked, "-o", force)
    return reasons
