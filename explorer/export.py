"""`explore export`: a trial's genotype as YAML or JSON, or its deployed network as ONNX or TorchScript.

The deployed network is the trial's genotype with 1000 classes at the study's
resolution, the network the budget priced (not the small proxy that was
trained). Its weights are freshly initialised: proxies train at a fraction of
the width, so there are no deployed weights to export; the file carries the
architecture, ready to train or to benchmark. ONNX needs the optional `onnx`
package (`pip install 'explore[onnx]'`); TorchScript needs nothing more.
"""
from __future__ import annotations

import json
from pathlib import Path

import optuna

import space

from . import files
from .errors import UserError
from .pareto import stored_genotype
from .search import DEPLOY_CLASSES
from .study import settings_of

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
        why = trial.user_attrs.get("rejected") or trial.state.name.lower()
        raise UserError(f"--trial: trial {number} has no genotype ({why}); pick a completed trial, "
                        "e.g. one from `explore pareto`")
    return stored_genotype(trial), trial


def deployed(g: space.Genotype, resolution: int):
    """The deployed network in eval mode and an example input."""
    import torch
    model = space.build(g, DEPLOY_CLASSES, 3, resolution).eval()
    return model, torch.randn(1, 3, resolution, resolution)


def onnx_param_count(model) -> int:
    """Elements of the initializers the graph's nodes use, each use counted once, BatchNormalization's
    running mean and variance (buffers, not parameters) left out. The exporter folds equal initializers
    into one (freshly initialised norms are all ones and zeros) and reads copies through Identity nodes,
    so counting the stored initializers would undercount."""
    import numpy as np
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


def export(study, number: int, fmt: str, path: Path, force: bool = False) -> str:
    """Write trial `number` of `study` as `fmt` to `path`; returns a line saying what was written.

    An existing file is replaced only with `force`, a storage file never (explorer/files.py)."""
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    files.check_target(path, force, "-o")
    settings = settings_of(study)
    g, trial = trial_genotype(study, number)
    if fmt == "onnx":
        try:
            import onnx
        except ImportError:
            raise UserError(ONNX_MISSING) from None
    if fmt == "yaml":
        files.write(path, space.to_yaml(g), "-o", force)
        return f"wrote trial {number}'s genotype to {path} (YAML)"
    if fmt == "json":
        files.write(path, json.dumps(space.dump(g), indent=2) + "\n", "-o", force)
        return f"wrote trial {number}'s genotype to {path} (JSON)"
    import torch
    model, x = deployed(g, settings.resolution)
    inference = sum(p.numel() for n, p in model.named_parameters() if ".aux" not in f".{n}")
    what = f"trial {number}'s deployed network ({settings.resolution}px, {DEPLOY_CLASSES} classes)"
    if fmt == "torchscript":
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, but still works
            traced = torch.jit.trace(model, x, check_trace=False)
        files.write(path, lambda tmp: torch.jit.save(traced, str(tmp)), "-o", force)
        n = sum(p.numel() for p in traced.parameters())
        return f"wrote {what} to {path} (TorchScript): {n:,} parameters"
    import io
    import warnings
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns that it is the legacy one
        torch.onnx.export(model, (x,), buf, dynamo=False, do_constant_folding=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    files.write(path, buf.getvalue(), "-o", force)
    n = onnx_param_count(proto)
    aux = "" if n == trial.user_attrs.get("params", n) else " (auxiliary heads, which only train, left out)"
    if n != inference:
        raise RuntimeError(f"the ONNX graph holds {n:,} parameters, the network {inference:,}")
    return f"wrote {what} to {path} (ONNX opset {ONNX_OPSET}): {n:,} parameters{aux}"

