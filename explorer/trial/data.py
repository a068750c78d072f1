"""Real datasets as in-memory uint8 tensors: train / val / test at one resolution.

`load(name)` returns `Splits`. The validation split is always held out from the
official training split, so the test split is never seen during search. Images
stay uint8 (4x smaller than float) and the trainer normalises them on device
with the per-channel `mean`/`std` computed here.

cifar10, mnist and fashion-mnist are downloaded once into a cache directory and
verified by MD5; fashion-mnist is also found where Debian's `dataset-fashion-mnist`
package puts it. `digits` ships with scikit-learn and works offline;
`imagefolder:PATH` reads the user's own images, one sub-folder per class, and
`npz:PATH` or arrays given from Python their own arrays (explorer.trial.userdata).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.errors import DataError
from ..base.settings import DEFAULT_DATASET, FALLBACK_DATASET, VAL_FRACTION, VAL_IMAGES
from . import userdata
from .readers import (
    FASHION_URL,
    IDX_MAGICS,
    SOURCES,
    SYSTEM_DIRS,
    Raw,
    fetch,
    idx_array,
    read_cifar10,
    read_digits,
    read_imagefolder,
    read_mnist,
    resize,
    stratified_split,
)

DATASETS = ("digits", "cifar10", "mnist", "fashion-mnist")
IMAGEFOLDER = "imagefolder:"

_CHUNK = 2048  # images per interpolate/stats step, bounds peak float memory


@dataclass(frozen=True)
class Splits:
    name: str
    train_x: torch.Tensor  # uint8, N x C x H x W
    train_y: torch.Tensor  # int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]  # per channel of train_x, in [0, 1] units
    std: tuple[float, ...]
    flip: bool  # whether horizontal flips preserve the label


def default_data_dir() -> Path:
    """Downloads go to the user's cache, shared by every project that uses explore."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "explore" / "data"


def load(name: str, resolution: int = 32, data_dir: Path | None = None, seed: int = 0,
         val_images: int | None = None, train_images: int | None = None) -> Splits:
    """Load a dataset, hold out `val_images` of its training split as validation
    (default: `default_val_images`), keep `train_images` of the rest for training
    (default: all), both class-balanced and seeded by `seed`, and resize to `resolution`."""
    if resolution < 1:
        raise DataError(f"resolution must be a positive number of pixels, got {resolution}")
    for flag, value in (("val-images", val_images), ("train-images", train_images)):
        if value is not None and value < 1:
            raise DataError(f"--{flag} must be a positive number of images, got {value}")
    raw, flip = _read(name, resolution, Path(data_dir or default_data_dir()).expanduser().resolve())
    rng = np.random.default_rng(seed)
    pool_y = raw.train_y.numpy()
    if raw.val_x is not None:  # the caller's own validation split
        fit, val_x, val_y = torch.arange(len(pool_y)), raw.val_x, raw.val_y
    else:
        held = default_val_images(len(pool_y)) if val_images is None else val_images
        if held >= len(pool_y):
            raise DataError(f"--val-images {held} leaves no training images: {name} has {len(pool_y)} "
                            f"in its training split")
        fit, val = stratified_split(pool_y, held, rng)
        val_x, val_y = raw.train_x[val], raw.train_y[val]
    if train_images is not None and train_images < len(fit):
        _, kept = stratified_split(pool_y[fit.numpy()], train_images, rng)
        fit = fit[kept]
    train_x = resize(raw.train_x[fit], resolution)
    mean, std = _channel_stats(train_x)
    return Splits(
        name=name,
        train_x=train_x, train_y=raw.train_y[fit],
        val_x=resize(val_x, resolution), val_y=val_y,
        test_x=resize(raw.test_x, resolution), test_y=raw.test_y,
        num_classes=raw.num_classes, in_channels=train_x.shape[1],
        mean=mean, std=std, flip=flip)


def default_val_images(pool: int) -> int:
    """VAL_IMAGES, or VAL_FRACTION of a training split too small to spare them."""
    return max(1, min(VAL_IMAGES, round(VAL_FRACTION * pool)))


def _read(name: str, resolution: int, root: Path) -> tuple[Raw, bool]:
    """The dataset's raw splits and whether horizontal flips keep its labels."""
    if name == "digits":
        return read_digits(), False
    if name == "cifar10":
        return read_cifar10(root / name, SOURCES[name]), True
    if name in ("mnist", "fashion-mnist"):
        return read_mnist(root / name, SOURCES[name], SYSTEM_DIRS.get(name, ())), name == "fashion-mnist"
    if name.startswith(userdata.PREFIXES):
        return userdata.held_or_read(name).raw, False  # flips may change what the user's images mean
    if name.startswith(IMAGEFOLDER) and name[len(IMAGEFOLDER):]:
        return read_imagefolder(Path(name[len(IMAGEFOLDER):]), resolution), True
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, {IMAGEFOLDER}PATH, "
                    f"{userdata.NPZ}PATH")


def ensure_available(name: str, data_dir: Path | None = None) -> None:
    """Find, verify or download a dataset's files now, so that a study is created only
    for data that can be had. Raises DataError with what to do otherwise."""
    root = Path(data_dir or default_data_dir()).expanduser().resolve()
    if name == "cifar10":
        fetch(SOURCES[name][0], root / name)
    elif name in ("mnist", "fashion-mnist"):
        for source, magic in zip(SOURCES[name], IDX_MAGICS):
            idx_array(source, magic, root / name, SYSTEM_DIRS.get(name, ()))
    elif name.startswith(userdata.PREFIXES):
        userdata.held_or_read(name)


def default_dataset(data_dir: Path | None = None) -> tuple[str, str | None]:
    """DEFAULT_DATASET when it can be had, else FALLBACK_DATASET with a one-line notice
    that says why and how to get the default."""
    try:
        ensure_available(DEFAULT_DATASET, data_dir)
        return DEFAULT_DATASET, None
    except DataError as e:
        folder = Path(data_dir or default_data_dir()).expanduser() / DEFAULT_DATASET
        return FALLBACK_DATASET, (
            f"Fashion-MNIST can't be had ({e}), so this uses the embedded digits instead, whose "
            f"accuracies crowd near 1.0. To get it: `sudo apt-get install dataset-fashion-mnist`, or "
            f"download the four files from {FASHION_URL} into {folder}")


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in float64 chunks
    so a 50k-image dataset never needs a full float copy."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), _CHUNK):
        part = x[i:i + _CHUNK].to(torch.float64) / 255
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


# ---------------------------------------------------------------- datasets
