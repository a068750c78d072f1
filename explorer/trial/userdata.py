"""Your own data: (x, y) arrays or tensors, a torch Dataset of (image, label), or an .npz file, checked
once and turned into what every other dataset is: uint8 N x C x H x W images and int64 labels
(explorer.trial.readers.Raw).

Bad data is refused in one line naming the field (DataError) before a study exists, never met as a
traceback deep inside training. A study stores the data's `identity` (a content digest, the image
shape, the classes), never the data: resuming it with other data is refused (Settings.COMPARABLE).
Data given from Python lives in this process only, under the name `arrays:DIGEST`; an .npz file is
named by its path and read by whichever process trains on it.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.errors import DataError
from .readers import Raw, hold_out_test

ARRAYS, NPZ = "arrays:", "npz:"
PREFIXES = (ARRAYS, NPZ)
MAX_CHANNELS = 4  # an axis this short is the channel axis: NCHW when it is the second, NHWC when the last
FORMS = "(x, y) arrays or tensors, a torch Dataset of (image, label), 'npz:PATH' or a dataset name"


@dataclass(frozen=True)
class UserData:
    name: str       # the study's dataset: arrays:DIGEST, or npz:PATH
    raw: Raw
    identity: dict  # what the study stores: digest, shape [C, H, W], classes, images


_HELD: dict[str, UserData] = {}  # data given from Python, by name
_READ: dict[str, tuple[tuple[int, int], UserData]] = {}  # .npz files by name, with the (mtime, size) read


def from_python(data, validation_data=None) -> UserData:
    """Data given from Python, checked and held in this process under arrays:DIGEST."""
    x, y = _pair(data, "data")
    val = None if validation_data is None else _pair(validation_data, "validation_data")
    user = _build(ARRAYS, ("data", "validation_data", "test"), (x, y), val, None)
    _HELD[user.name] = user
    return user


def held_or_read(name: str) -> UserData:
    """The data a study names: held from Python, or read from its .npz file (again if it changed)."""
    if name in _HELD:
        return _HELD[name]
    if name.startswith(ARRAYS):
        raise DataError(f"data: this study's data ({name}) was given from Python and isn't in this process; pass "
                        "it again: explorer.search(data=(x, y), study=...), or save it with np.savez and use npz:PATH")
    path = Path(name[len(NPZ):]).expanduser()
    if not path.is_file():
        raise DataError(f"--dataset {name}: no file {path}; save your arrays with np.savez(PATH, x=images, y=labels)")
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    if name not in _READ or _READ[name][0] != stamp:
        _READ[name] = stamp, _read_npz(name, path)
    return _READ[name][1]


def identity_of(dataset: str) -> dict | None:
    """What a study stores of the data it searches on: its identity for your own data, None for a named set."""
    return held_or_read(dataset).identity if dataset.startswith(PREFIXES) else None


# Reading ----------------------------------------------------------------------------------------

def _pair(data, field: str) -> tuple:
    """(images, labels) of (x, y) or of a Dataset."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(f"{field}: give (x, y), images and labels; got a {type(data).__name__} of {len(data)}")
        return tuple(data)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        raise DataError(f"{field}: images alone have no labels; give (x, y)")
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return _from_dataset(data, field)
    raise DataError(f"{field}: give {FORMS}; got {type(data).__name__}")


def _from_dataset(dataset, field: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (image, label) item of a map-style Dataset, stacked."""
    if len(dataset) == 0:
        raise DataError(f"{field}: the Dataset is empty")
    images, labels = [], []
    for i in range(len(dataset)):
        try:
            item = dataset[i]
        except Exception as e:  # noqa: BLE001 - whatever the user's code raises is said in one line
            raise DataError(f"{field}: the Dataset raised on item {i} ({type(e).__name__}: {_one_line(e)})") from None
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise DataError(f"{field}: item {i} of the Dataset is a {type(item).__name__}, not an (image, label) pair")
        image = _array(item[0])
        if images and image.shape != images[0].shape:
            raise DataError(f"{field}: item {i}'s image has shape {image.shape} but item 0's {images[0].shape}; "
                            "give images of one size")
        images.append(image)
        labels.append(_array(item[1]))
    return np.stack(images), np.stack(labels)


def _read_npz(name: str, path: Path) -> UserData:
    """x and y (or x_train and y_train), with x_val and y_val, x_test and y_test where the file has them."""
    field = f"--dataset {name}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as e:
        raise DataError(f"{field}: not a readable .npz file ({_one_line(e)}); "
                        "save one with np.savez(PATH, x=images, y=labels)") from None

    def split(*stems: str) -> tuple | None:
        return next(((arrays[f"x{s}"], arrays[f"y{s}"]) for s in stems if {f"x{s}", f"y{s}"} <= set(arrays)), None)

    train = split("", "_train")
    if train is None:
        raise DataError(f"{field}: holds {', '.join(sorted(arrays)) or 'no arrays'}; it needs x and y "
                        "(or x_train and y_train), optionally x_val, y_val, x_test, y_test")
    return _build(name, (field, f"{field} (x_val, y_val)", f"{field} (x_test, y_test)"), train, split("_val"),
                  split("_test"))


# Checking ---------------------------------------------------------------------------------------

def _build(name: str, fields: tuple[str, str, str], train: tuple, val: tuple | None, test: tuple | None) -> UserData:
    """Checked splits, named by `fields` in errors (training, validation, test). A fixed test split is held
    out of the training data unless one is given; a validation split later (data.load) unless one is given."""
    train_x, train_y = _checked(train, fields[0])
    classes = _classes(train_y, fields[0])
    val, test = (None if pair is None else _checked_like(pair, field, train_x, classes)
                 for field, pair in zip(fields[1:], (val, test)))
    raw = Raw(train_x, train_y, *test, classes) if test else hold_out_test(train_x, train_y, classes)
    if val:
        raw = raw._replace(val_x=val[0], val_y=val[1])
    identity = {"digest": _digest(train_x, train_y, *(val or ()), *(test or ())),
                "shape": list(train_x.shape[1:]), "classes": classes, "images": len(train_x)}
    return UserData(ARRAYS + identity["digest"] if name == ARRAYS else name, raw, identity)


def _checked(pair: tuple, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = _images(_array(pair[0]), field)
    return x, _labels(_array(pair[1]), len(x), field)


def _checked_like(pair: tuple, field: str, train_x: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A validation or test split: images shaped as the training images, labels among their classes."""
    x, y = _checked(pair, field)
    if x.shape[1:] != train_x.shape[1:]:
        raise DataError(f"{field}: images are {_shape(x)} but the training images {_shape(train_x)}")
    outside = y[(y < 0) | (y >= classes)]
    if len(outside):
        raise DataError(f"{field}: label {int(outside[0])} is out of range; the training labels are 0 to {classes - 1}")
    return x, y


def _images(x: np.ndarray, field: str) -> torch.Tensor:
    """uint8 N x C x H x W from N x H x W, NCHW or NHWC, in uint8 or in [0, 1] or [0, 255] numbers."""
    if x.ndim == 3:
        x = x[:, None]  # N x H x W: one channel
    if x.ndim != 4:
        raise DataError(f"{field}: images must be N x H x W, N x C x H x W or N x H x W x C; got a {x.ndim}-D "
                        f"array of shape {x.shape}")
    if len(x) == 0:
        raise DataError(f"{field}: there are no images")
    if x.shape[1] > MAX_CHANNELS:
        if x.shape[3] > MAX_CHANNELS:
            raise DataError(f"{field}: shape {x.shape} has no channel axis (1 to {MAX_CHANNELS}) second or last")
        x = x.transpose(0, 3, 1, 2)  # NHWC
    images = np.ascontiguousarray(_bytes(x, field))
    return torch.from_numpy(images.copy() if np.shares_memory(images, x) else images)  # never the caller's memory


def _bytes(x: np.ndarray, field: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "iuf":
        raise DataError(f"{field}: pixels must be numbers; got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise DataError(f"{field}: {bad} pixel value{'s are' if bad > 1 else ' is'} NaN or infinite")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 255:
        raise DataError(f"{field}: pixels must lie in [0, 1] or [0, 255]; these run from {low:g} to {high:g} "
                        "(give them before normalising: the search normalises with the data's own mean and std)")
    return np.rint(x * (255 if high <= 1 else 1)).astype(np.uint8)


def _labels(y: np.ndarray, count: int, field: str) -> torch.Tensor:
    if y.ndim != 1:
        hint = " (one-hot? give y.argmax(1))" if y.ndim == 2 else ""
        raise DataError(f"{field}: labels must be one number per image, a 1-D array; got shape {y.shape}{hint}")
    if len(y) != count:
        raise DataError(f"{field}: {count} images but {len(y)} labels; give one label per image")
    integral = y.dtype.kind in "iu" or (y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y)))))
    if not integral:
        raise DataError(f"{field}: labels must be whole numbers 0 to K-1; got dtype {y.dtype} "
                        "(map other labels with np.unique(y, return_inverse=True)[1])")
    return torch.from_numpy(y.astype(np.int64))


def _classes(y: torch.Tensor, field: str) -> int:
    """The number of classes, K, when the labels are 0 to K-1 with every class present."""
    present = torch.unique(y).tolist()
    if len(present) < 2:
        raise DataError(f"{field}: every label is {present[0]}; classification needs at least 2 classes")
    if present != list(range(len(present))):
        odd = [label for label in present if not 0 <= label < len(present)]
        raise DataError(f"{field}: labels must be 0 to {len(present) - 1} for {len(present)} classes; label "
                        f"{odd[0]} is out of range (map them with np.unique(y, return_inverse=True)[1])")
    return len(present)


def _digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(repr((str(t.dtype), tuple(t.shape))).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:16]


def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _shape(x: torch.Tensor) -> str:
    return "x".join(map(str, x.shape[1:]))


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split())
