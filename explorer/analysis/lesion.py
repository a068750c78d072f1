"""`explore lesion`: delete blocks of a trained network at test time (Veit et al. 2016).

Veit, Wilber and Belongie ("Residual networks behave like ensembles of relatively
shallow networks", NeurIPS 2016) delete single residual blocks of a trained
ResNet at test time and find the accuracy barely moves, while deleting a layer of
a plain (VGG-like) network is catastrophic; accuracy also degrades smoothly as
more blocks are deleted at random.

Deleting a residual block removes its residual branch: the block returns its
shortcut path, shortcut(x), which is exactly x for an identity shortcut (a
projection or padding shortcut where the block changes the shape). Blocks
without a residual skip (plain and dense blocks) have no path around them and
can't be deleted; they are reported as "not deletable".

Trials don't keep their weights, so the proxy is trained once with the study's
recipe (and stochastic depth, if the study uses it) from the trial's own
initialisation (a named genotype that `explore train` stored in the study is that
trial); the weights are kept in studies/STUDY/weights/ and reused by the
next run with the same proxy and recipe. Accuracy is measured on the test split,
which search never looks at.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch

import space
from space.blocks import Block, lesioned
from space.graph import offline_html

from ..base import files
from ..base.errors import UserError
from ..base.settings import Recipe
from ..studies.record import REFERENCE, reason_of, state_of
from ..studies.store import load_study, settings_of, study_dir
from ..trial.candidate import load_data, proxy_of, trial_seed
from ..trial.trainer import evaluate, resolve_device, set_cpu_threads, train
from .pareto import stored_genotype


@dataclass
class Subject:
    """One trained network to lesion: a trial's proxy or a named genotype's."""
    label: str
    proxy: space.Genotype
    seed: int
    model: torch.nn.Module | None = None
    baseline: float = 0.0
    blocks: list[dict] = field(default_factory=list)
    random: list[dict] = field(default_factory=list)


def blocks_of(model: torch.nn.Module) -> list[tuple[str, Block]]:
    """Every unrolled block, input to output, with a readable name such as layer2.block0_1."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, Block):
            out.append((name.removeprefix("stages."), module))
    return out


def kind(block: Block) -> str:
    return {"residual": "residual", "dense": "dense"}.get(block.skip, "plain")


def deletable(block: Block) -> bool:
    return block.skip == "residual"


def weights_path(directory: Path, key: str, proxy, recipe: Recipe, stochastic_depth) -> Path:
    ident = json.dumps([space.schema.canonical_json(proxy), recipe.to_dict(), stochastic_depth], sort_keys=True)
    return directory / f"{key}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.pt"


def trained(subject: Subject, data, recipe: Recipe, stochastic_depth, device, weights_dir: Path | None,
            key: str, retrain: bool = False) -> tuple[torch.nn.Module, bool]:
    """The subject's proxy trained with the recipe, loaded from weights_dir when it was trained before."""
    path = weights_path(weights_dir, key, subject.proxy, recipe, stochastic_depth) if weights_dir else None
    torch.manual_seed(subject.seed)
    model = space.build(subject.proxy, data.num_classes, data.in_channels).to(device)
    space.network.stochastic_depth(model, stochastic_depth)
    if path is not None and path.exists() and not retrain:
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model, True
    train(model, data, recipe, device)
    if path is not None:
        files.write(path, lambda tmp: torch.save(model.state_dict(), tmp), "weights", own=True)
    return model, False


def accuracy_with(model, deleted: list[Block], data, device) -> float:
    """Test accuracy with the given blocks deleted; every block is restored afterwards."""
    with lesioned(deleted):
        return evaluate(model, data.test_x, data.test_y, data, device)


def profile(subject: Subject, data, device) -> None:
    """Baseline accuracy, then each block deleted in turn."""
    model = subject.model
    subject.baseline = accuracy_with(model, [], data, device)
    subject.blocks = []
    for position, (name, block) in enumerate(blocks_of(model), 1):
        row = {"position": position, "name": name, "kind": kind(block), "deletable": deletable(block),
               "accuracy": None, "drop": None}
        if deletable(block):
            row["accuracy"] = accuracy_with(model, [block], data, device)
            row["drop"] = subject.baseline - row["accuracy"]
        subject.blocks.append(row)


def random_deletions(subject: Subject, k_max: int, draws: int, seed: int, data, device) -> None:
    """Accuracy with k = 0..k_max deletable blocks deleted at random, `draws` draws per k."""
    pool = [b for _, b in blocks_of(subject.model) if deletable(b)]
    rng = random.Random(seed)
    subject.random = [{"k": 0, "accuracy": subject.baseline}]
    for k in range(1, min(k_max, len(pool)) + 1):
        for _ in range(draws):
            subject.random.append({"k": k, "accuracy": accuracy_with(subject.model, rng.sample(pool, k), data, device)})


def figure(title: str, subjects: list[Subject], with_k: bool):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    rows = 2 if with_k else 1
    fig = make_subplots(rows=rows, cols=1, vertical_spacing=0.14, subplot_titles=(
        ["accuracy drop when one block is deleted (test split)"]
        + (["accuracy with k blocks deleted at random"] if with_k else [])))
    for i, s in enumerate(subjects):
        colour = colours[i % len(colours)]
        can = [b for b in s.blocks if b["deletable"]]
        cannot = [b for b in s.blocks if not b["deletable"]]
        fig.add_trace(go.Bar(
            x=[b["position"] for b in can], y=[b["drop"] for b in can], name=f"{s.label} (baseline {s.baseline:.3f})",
            marker_color=colour, legendgroup=s.label, offsetgroup=str(i),
            customdata=[[b["name"], b["kind"], b["accuracy"]] for b in can],
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>accuracy %{customdata[2]:.4f}<br>"
                          "drop %{y:.4f}<extra>" + s.label + "</extra>"), row=1, col=1)
        if cannot:
            fig.add_trace(go.Scatter(
                x=[b["position"] for b in cannot], y=[0.0] * len(cannot), mode="markers",
                name=f"{s.label}: not deletable", legendgroup=s.label,
                marker=dict(symbol="x", size=9, color=colour, opacity=0.6),
                customdata=[[b["name"], b["kind"]] for b in cannot],
                hovertemplate="%{customdata[0]} (%{customdata[1]}): not deletable<extra>" + s.label + "</extra>"),
                row=1, col=1)
        if with_k and s.random:
            ks = sorted({r["k"] for r in s.random})
            means = [sum(r["accuracy"] for r in s.random if r["k"] == k) / sum(r["k"] == k for r in s.random)
                     for k in ks]
            fig.add_trace(go.Scatter(x=[r["k"] for r in s.random], y=[r["accuracy"] for r in s.random],
                                     mode="markers", marker=dict(color=colour, opacity=0.4, size=6),
                                     name=f"{s.label}: random draws", legendgroup=s.label), row=2, col=1)
            fig.add_trace(go.Scatter(x=ks, y=means, mode="lines+markers", line=dict(color=colour),
                                     name=f"{s.label}: mean", legendgroup=s.label), row=2, col=1)
    fig.update_xaxes(title_text="block (input to output)", row=1, col=1)
    fig.update_yaxes(title_text="accuracy drop", row=1, col=1)
    if with_k:
        fig.update_xaxes(title_text="blocks deleted at random", row=2, col=1)
        fig.update_yaxes(title_text="test accuracy", row=2, col=1)
    fig.update_layout(title=title, template="plotly_white", barmode="group", height=450 * rows)
    return fig


def write(path: Path, title: str, subjects: list[Subject], with_k: bool) -> None:
    files.write(path, offline_html(figure(title, subjects, with_k)), "lesion", own=True)


def _subject_from_trial(study, settings, number: int) -> Subject:
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not trials:
        raise UserError(f"--trial: study '{study.study_name}' has no trial {number}")
    t = trials[0]
    if "proxy_genotype" not in t.user_attrs:
        why = reason_of(t) or state_of(t)
        raise UserError(f"--trial: trial {number} has no trained proxy ({why})")
    proxy = stored_genotype(t, "proxy_genotype")
    family = t.user_attrs.get(REFERENCE) or t.user_attrs.get("family", "custom")
    return Subject(f"trial {number} ({family})", proxy, trial_seed(settings.seed, number))


def _subject_from_genotype(g, settings, data, label: str) -> Subject:
    return Subject(label, proxy_of(g, settings, data)[0], trial_seed(settings.seed, 0))


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def run(ref: str, trial: int | None, study_name: str | None, storage: str | None, compare: str | None,
        k: int | None, draws: int, seed: int, device: str, data_dir, retrain: bool, resolve_genotype,
        console=None) -> tuple[Path, list[Subject]]:
    """Resolve the subjects, train (or load) them, lesion them, write the page; see `explore lesion -h`."""
    if trial is None and study_name is None:
        raise UserError("lesion: give a study and --trial N (explore lesion STUDY --trial N), "
                        "or a genotype and its study (explore lesion NAME --study STUDY)")
    name = study_name or ref
    study = load_study(name, storage)
    settings = settings_of(study)
    dev = resolve_device(device)
    if dev.type == "cpu":
        set_cpu_threads()
    data = load_data(settings, data_dir)

    def subject(spec: str | int) -> tuple[Subject, str]:
        if isinstance(spec, int):
            return _subject_from_trial(study, settings, spec), f"trial-{spec}"
        g = resolve_genotype(spec)
        label = g.name or Path(spec).stem
        ref = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
               if t.user_attrs.get(REFERENCE) == label and "proxy_genotype" in t.user_attrs]
        if ref:  # trained by `explore train` (or enqueued as a classic): the same proxy, seed and recipe
            s = _subject_from_trial(study, settings, ref[-1].number)
            s.label = label
            return s, f"trial-{ref[-1].number}"
        return _subject_from_genotype(g, settings, data, label), _safe(label)

    first = trial if trial is not None else ref
    specs = [first] + ([int(compare) if compare.isdigit() else compare] if compare else [])
    recipe = settings.recipe
    weights_dir = study_dir(name) / "weights"
    subjects, keys = [], []
    for spec in specs:
        s, key = subject(spec)
        if console:
            console.print(f"{s.label}: training the proxy ({recipe.epochs} epochs) or loading its weights...",
                          highlight=False)
        s.model, loaded = trained(s, data, recipe, settings.stochastic_depth, dev, weights_dir, key, retrain)
        s.model.eval()
        profile(s, data, dev)
        if k:
            random_deletions(s, k, draws, seed, data, dev)
        subjects.append(s)
        keys.append(key)
    out = study_dir(name) / f"lesion-{trial if trial is not None else _safe(keys[0])}.html"
    title = f"{name}: lesion study (Veit et al. 2016) of " + " vs ".join(s.label for s in subjects)
    write(out, title, subjects, bool(k))
    return out, subjects
