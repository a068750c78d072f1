"""`explore train GENOTYPE -o weights.pt`: train a genotype outside any study and keep its weights.

The file is a plain state_dict: `space.build(g, classes, in_channels).load_state_dict(torch.load(path))`
loads it strictly. What it was trained as (the genotype, classes, input channels,
resolution, dataset) rides along in the state_dict's own `_metadata`, which
PyTorch saves and loads with it and `load_state_dict` ignores, so `explore
export --weights` can rebuild the same network without being told again.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import space

from ..base.errors import UserError
from ..base.settings import Recipe
from . import data as datasets
from .trainer import Result, UnusableCheckpoint, resolve_device, train

META_KEY = "explore"


@dataclass
class Trained:
    """What a weights file was trained as."""
    genotype: str  # canonical JSON
    classes: int
    in_channels: int
    resolution: int
    dataset: str
    val_accuracy: float


def train_genotype(g: space.Genotype, dataset: str, recipe: Recipe, resolution: int, device: str,
                   data_dir: Path | None = None, on_epoch=None,
                   checkpoint: Path | None = None) -> tuple[torch.nn.Module, Trained, Result]:
    """The genotype itself (not a proxy) trained on `dataset` at `resolution` with `recipe`; with a
    `checkpoint` file, resumed from its last finished epoch (explorer.trial.trainer.train)."""
    dev = resolve_device(device)
    data = datasets.load(dataset, resolution=resolution, data_dir=data_dir, seed=recipe.seed)
    try:
        space.complexity(g, resolution, data.num_classes, data.in_channels, breakdown=False)
    except space.GenotypeError as e:
        raise UserError(f"--resolution: {g.name or 'the genotype'} can't run at {resolution}px ({e})") from None
    torch.manual_seed(recipe.seed)
    model = space.build(g, data.num_classes, data.in_channels, resolution)
    try:
        result = train(model, data, recipe, dev, on_epoch=on_epoch, checkpoint=checkpoint)
    except UnusableCheckpoint as e:
        raise UserError(f"-o: {e}") from None
    except OSError as e:  # the only file the training writes
        raise UserError(f"-o: can't write the checkpoint {checkpoint} ({e.strerror or e})") from None
    meta = Trained(space.schema.canonical_json(g), data.num_classes, data.in_channels, resolution, dataset,
                   result.val_accuracy)
    return model, meta, result


def state_with_meta(model: torch.nn.Module, meta: Trained) -> dict:
    """The model's state_dict on the CPU, contiguous, with `meta` in its `_metadata`: the attribute
    every state_dict carries for module versions, which torch.save keeps and torch.load restores."""
    state = model.state_dict()
    for key, value in state.items():
        state[key] = value.detach().to("cpu").contiguous()
    state._metadata[""] = {**state._metadata.get("", {}), META_KEY: json.dumps(asdict(meta))}
    return state


def read(path: Path) -> tuple[dict, Trained | None]:
    """A weights file: its state_dict and, when explore wrote it, what it was trained as."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--weights: {path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is one line, not a traceback
        raise UserError(f"--weights: {path} is not a PyTorch state_dict ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--weights: {path} holds a {type(state).__name__}, not a state_dict of tensors")
    text = (getattr(state, "_metadata", None) or {}).get("", {}).get(META_KEY)
    return state, (Trained(**json.loads(text)) if text else None)


def load_into(model: torch.nn.Module, state: dict, path: Path, what: str) -> None:
    """Strict loading, with a one-line error naming the first mismatch."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split("\n\t")[1:2]).strip() or str(e).splitlines()[0]
        raise UserError(f"--weights: {path} doesn't fit {what} ({detail[:200]}); pass the --classes and "
                        "--in-channels it was trained with") from None
