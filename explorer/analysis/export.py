"""`explore export`: a genotype as YAML or JSON, or its network as ONNX or TorchScript.

The genotype is a named one, a file, or a study's trial. A trial's network is
deployed as the budget priced it: 1000 classes at the study's resolution (not
the small proxy that was trained); a named genotype or a file is exported at
its own resolution and classes. `--resolution`, `--classes` and
`--in-channels` override either. Weights are freshly initialised unless
`--weights` gives a file from `explore train GENOTYPE -o weights.pt`, whose
classes and input channels then become the defaults. ONNX needs the optional
`onnx` package (`pip install 'explore[onnx]'`); TorchScript needs nothing more.
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch

import space

from ..base import files
from ..base.errors import UserError
from ..studies.record import reason_of, state_of
from ..studies.store import settings_of
from ..trial import weights as W
from ..trial.candidate import DEPLOY_CLASSES
from .pareto import stored_genotype

FORMATS = ("yaml", "json", "onnx", "torchscript")
ONNX_MISSING = "ONNX export needs the onnx package: pip install 'explore[onnx]'"
ONNX_OPSET = 17


def trial_genotype(study, number: int) -> tuple[space.Genotype, optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    if number not in by_number:
        span = f"0 to {max(by_number)}" if by_number else "none yet"
        raise UserError(f"--trial: study '{study.study_name}' has no trial {number} (trials: {span})")
    trial = by_number[number]
    text = trial.user_attrs.get("genotype")
    if text is None:
        why = reason_of(trial) or state_of(trial)
        raise UserError(f"--trial: trial {number} has no genotype ({why}); pick a completed trial, "
                        "e.g. one from `explore pareto`")
    return stored_genotype(trial), trial


@dataclass
class Target:
    """The network to write: the genotype built at this resolution for these classes and input channels."""
    g: space.Genotype
    label: str  # "trial 7's", "xception's"
    resolution: int
    classes: int
    in_channels: int = 3
    state: dict | None = None  # trained weights, loaded strictly
    weights: Path | None = None


def deployed(t: Target):
    """The network in eval mode (with its trained weights, if any) and an example input."""
    try:
        model = space.build(t.g, t.classes, t.in_channels, t.resolution).eval()
    except space.GenotypeError as e:
        raise UserError(f"--resolution: {t.label} network can't run at {t.resolution}px ({e})") from None
    if t.state is not None:
        W.load_into(model, t.state, t.weights, f"{t.label} network with {t.classes} classes and "
                    f"{t.in_channels} input channels")
    return model, torch.randn(1, t.in_channels, t.resolution, t.resolution)


def onnx_param_count(model) -> int:
    """Elements of the initializers the graph's nodes use, each use counted once, BatchNormalization's
    running mean and variance (buffers, not parameters) left out. The exporter folds equal initializers
    into one (freshly initialised norms are all ones and zeros) and reads copies through Identity nodes,
    so counting the stored initializers would undercount."""
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    alias = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in sizes | alias:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
    total = 0
    for node in model.graph.node:
        if node.op_type == "Identity":
            continue
        for k, name in enumerate(node.input):
            name = alias.get(name, name)
            if name in sizes and not (node.op_type == "BatchNormalization" and k >= 3):
                total += sizes[name]
    return total


def trial_target(study, number: int, resolution: int | None = None, classes: int | None = None,
                 in_channels: int | None = None, weights: Path | None = None) -> Target:
    """A trial's network as deployed: the study's resolution, 1000 classes (or what `weights` was trained with)."""
    g, _ = trial_genotype(study, number)
    return genotype_target(g, f"trial {number}", resolution or settings_of(study).resolution,
                           classes or (None if weights else DEPLOY_CLASSES), in_channels, weights)


def genotype_target(g: space.Genotype, label: str, resolution: int | None = None, classes: int | None = None,
                    in_channels: int | None = None, weights: Path | None = None) -> Target:
    """A named genotype or a file; with `weights`, classes and input channels default to what they were trained
    with."""
    state, trained = W.read(weights) if weights else (None, None)
    if trained is not None:
        other = space.load(json.loads(trained.genotype))
        if space.digest(other) != space.digest(g):
            raise UserError(f"--weights: {weights} was trained for another genotype "
                            f"({other.name or 'digest ' + space.digest(other)}), not {label}")
    default_classes = trained.classes if trained else g.classes
    default_channels = trained.in_channels if trained else 3
    return Target(g, f"{label}'s", resolution or g.resolution, classes or default_classes,
                  in_channels or default_channels, state, weights)


def export(t: Target, fmt: str, path: Path, force: bool = False) -> str:
    """Write the target as `fmt` to `path`; returns a line saying what was written.

    An existing file is replaced only with `force`, a storage file never (explorer/base/files.py)."""
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    files.check_target(path, force, "-o")
    if fmt in ("yaml", "json"):
        text = space.to_yaml(t.g) if fmt == "yaml" else json.dumps(space.dump(t.g), indent=2) + "\n"
        files.write(path, text, "-o", force)
        return f"wrote {t.label} genotype to {path} ({fmt.upper()})"
    if fmt == "onnx":
        try:
            import onnx
        except ImportError:
            raise UserError(ONNX_MISSING) from None
    model, x = deployed(t)
    inference = sum(p.numel() for n, p in model.named_parameters() if ".aux" not in f".{n}")
    trained = f", trained weights from {t.weights}" if t.state is not None else ", untrained"
    what = f"{t.label} network ({t.resolution}px, {t.classes} classes, {t.in_channels} input channels{trained})"
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, but still works
            traced = torch.jit.trace(model, x, check_trace=False)
        files.write(path, lambda tmp: torch.jit.save(traced, str(tmp)), "-o", force)
        n = sum(p.numel() for p in traced.parameters())
        return f"wrote {what} to {path} (TorchScript): {n:,} parameters"
    blob = onnx_bytes(model, x)
    proto = onnx.load_from_string(blob)
    onnx.checker.check_model(proto)
    files.write(path, blob, "-o", force)
    n = onnx_param_count(proto)
    if n != inference:
        raise RuntimeError(f"the ONNX graph holds {n:,} parameters, the network {inference:,}")
    total = sum(p.numel() for p in model.parameters())
    aux = "" if n == total else " (auxiliary heads, which only train, left out)"
    return f"wrote {what} to {path} (ONNX opset {ONNX_OPSET}): {n:,} parameters{aux}"


def onnx_bytes(model, x) -> bytes:
    """The model as an ONNX graph with a dynamic batch axis (the TorchScript-based exporter)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns that it is the legacy one
        torch.onnx.export(model, (x,), buf, dynamo=False, do_constant_folding=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()

