"""Where datasets come from: their published files, checksums, downloads and readers.

Every copy is verified before use: a download by the published MD5, and the IDX
files of mnist and fashion-mnist also by the MD5 of their decompressed bytes and
their header counts, so a recompressed system copy (Debian's) passes and a wrong
file never does.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..base.errors import DataError

# Fixed so that every seed and validation size is scored on the same test images.
_TEST_SEED = 0
_TEST_FRACTION = 0.2
_CHUNK = 2048  # images per interpolate step, bounds peak float memory


@dataclass(frozen=True)
class Source:
    url: str
    filename: str
    md5: str                        # of the file as published
    content_md5: str | None = None  # of its decompressed bytes: recompressed copies differ only in `md5`
    count: int | None = None        # items its header must declare


_CIFAR = "https://www.cs.toronto.edu/~kriz/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _sources(base: str, md5s: Sequence[str], contents: Sequence[str | None] = (None,) * 4,
             counts: Sequence[int] = (60000, 60000, 10000, 10000)) -> tuple[Source, ...]:
    return tuple(Source(base + f, f, *more) for f, *more in zip(IDX_FILES, md5s, contents, counts))


# The official files. `load` looks them up here at call time, so tests can
# point a dataset at their own server.
SOURCES: dict[str, tuple[Source, ...]] = {
    "cifar10": (Source(_CIFAR + "cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a"),),
    "mnist": _sources(_MNIST, ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                               "d53e105ee54ea40749a09fcbcd1e9432",
                               "9fb629c4189551a2d022fa330f9573f3",
                               "ec29112dd5afa0611ce80d1b7f02629c")),
    "fashion-mnist": _sources(FASHION_URL, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                         "25c81989df183df01b3e8a0aad5dffbe",
                                         "bef4ecab320f06d8554ea6380940ec79",
                                         "bb300cfdad3c16e7a12a480ee83cd310"),
                              # the decompressed IDX files, as Debian's package ships them
                              ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                               "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965")),
}
# Where an operating system's package puts a dataset (Debian: `apt-get install
# dataset-fashion-mnist`). Looked up at call time, after the cache and before a download.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}


class Raw(NamedTuple):
    """A dataset before val split and resizing: x uint8 N x C x H x W, y int64. A validation split of its
    own (`val_x`, `val_y`: the caller's) replaces the one otherwise held out of the training split."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None


def read_digits() -> Raw:
    # Imported here: scikit-learn is slow to import and only digits needs it.
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # values are 0..16
    return hold_out_test(torch.from_numpy(x).unsqueeze(1),
                          torch.from_numpy(digits.target.astype(np.int64)), 10)


_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def read_cifar10(root: Path, sources: Sequence[Source]) -> Raw:
    (source,) = sources
    archive = fetch(source, root)
    folder = root / _CIFAR_DIR
    if not all((folder / batch).is_file() for batch in _CIFAR_BATCHES):
        _extract(archive, root)
    parts = [_cifar_batch(folder / batch, archive) for batch in _CIFAR_BATCHES]
    train_x = torch.cat([x for x, _ in parts[:-1]])
    train_y = torch.cat([y for _, y in parts[:-1]])
    return Raw(train_x, train_y, *parts[-1], 10)


def _cifar_batch(path: Path, archive: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"{archive} has no {_CIFAR_DIR}/{path.name}; delete it and try again")
    # Unpickling is acceptable only because the archive passed its MD5 check.
    with path.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(batch[b"labels"], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


IDX_MAGICS = (2051, 2049, 2051, 2049)  # images (3 dims), labels (1 dim), as in IDX_FILES


def read_mnist(root: Path, sources: Sequence[Source], system_dirs: Sequence[Path]) -> Raw:
    """MNIST-format IDX files, in the order train images, train labels, test images,
    test labels."""
    train_x, train_y, test_x, test_y = (idx_array(source, magic, root, system_dirs)
                                        for source, magic in zip(sources, IDX_MAGICS))
    return Raw(*_idx_pair(train_x, train_y, sources[0]), *_idx_pair(test_x, test_y, sources[2]), 10)


def _idx_pair(x: np.ndarray, y: np.ndarray, images: Source) -> tuple[torch.Tensor, torch.Tensor]:
    if len(x) != len(y):
        raise DataError(f"{images.filename} holds {len(x)} images but its labels file holds {len(y)} labels")
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def idx_array(source: Source, magic: int, cache: Path, system_dirs: Sequence[Path]) -> np.ndarray:
    """The verified contents of `source`: from the cache, else from an operating system's
    package, else downloaded into the cache. A copy that fails verification is passed over."""
    for path in (cache / source.filename, *(folder / source.filename for folder in system_dirs)):
        if path.is_file():
            try:
                return _read_idx(path, magic, source)
            except DataError:
                continue  # a corrupt cache is downloaded again below, and fetch says so if it can't be
    return _read_idx(fetch(source, cache, check=lambda part: _read_idx(part, magic, source)), magic, source)


def _read_idx(path: Path, magic: int, source: Source) -> np.ndarray:
    """Parse a gzipped IDX file of unsigned bytes (magic 0x08nn: nn = number of dims),
    checking its decompressed bytes and its item count against `source`."""
    try:
        with gzip.open(path, "rb") as f:
            raw = bytearray(f.read())  # writable, as torch.from_numpy wants
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable gzip file ({_one_line(e)})") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file with magic number {magic}")
    dims = [int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)]
    if source.count is not None and dims[0] != source.count:
        raise DataError(f"{path} holds {dims[0]} items, expected {source.count}")
    if source.content_md5 and hashlib.md5(raw, usedforsecurity=False).hexdigest() != source.content_md5:
        raise DataError(f"{path} decompresses to other bytes than {source.filename}'s (MD5 mismatch)")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != np.prod(dims):
        raise DataError(f"{path} is truncated: header says {dims}, found {data.size} bytes")
    return data.reshape(dims)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                   ".ppm", ".pgm"}


def read_imagefolder(path: Path, resolution: int) -> Raw:
    """PATH/<class>/<image>, or PATH/train/<class>/... and PATH/test/<class>/...
    Images are resized on read because their sizes may differ."""
    path = path.expanduser()
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist or is not a directory")
    train, test = path / "train", path / "test"
    if train.is_dir() and test.is_dir():
        classes = _class_names(train)
        unknown = sorted(set(_class_names(test)) - set(classes))
        if unknown:
            raise DataError(f"{test} has classes missing from {train}: {', '.join(unknown)}")
        return Raw(*_read_images(train, classes, resolution),
                    *_read_images(test, classes, resolution), len(classes))
    classes = _class_names(path)
    return hold_out_test(*_read_images(path, classes, resolution), len(classes))


def _class_names(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{folder} has no class folders; put each class's images "
                        f"in its own sub-folder")
    if len(names) < 2:
        raise DataError(f"{folder} has one class folder ({names[0]}); classification needs at least 2, "
                        "one sub-folder per class")
    return names


def _read_images(folder: Path, classes: list[str],
                 resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(classes):
        if not (folder / name).is_dir():
            continue
        for file in sorted((folder / name).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES or file.name.startswith("."):
                continue
            try:
                with Image.open(file) as image:
                    rgb = np.array(image.convert("RGB"))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                raise DataError(f"cannot read image {file} ({_one_line(e)})") from None
            images.append(resize(torch.from_numpy(rgb).permute(2, 0, 1)[None], resolution))
            labels.append(label)
    if not images:
        raise DataError(f"{folder} has no images in its class folders "
                        f"({', '.join(sorted(_IMAGE_SUFFIXES))})")
    return torch.cat(images), torch.tensor(labels, dtype=torch.int64)


# ---------------------------------------------------------------- download

def fetch(source: Source, root: Path, check: Callable[[Path], object] | None = None) -> Path:
    """The local copy of `source` in `root`, downloaded once and verified by MD5 (and by
    `check`, which raises DataError, before it enters the cache). A cached file with the
    wrong checksum is downloaded again."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / source.filename
    corrupt = target.exists() and _md5(target) != source.md5
    if target.exists() and not corrupt:
        return target
    # The cached file only needs a mention when the download fails too.
    prefix = f"{target} is corrupt (wrong checksum) and " if corrupt else ""
    fd, partial = tempfile.mkstemp(prefix=f".{source.filename}.", suffix=".part", dir=root)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _download(source, out)
        if digest != source.md5:
            raise DataError(f"checksum of {source.filename} downloaded from {source.url} "
                            f"differs: got MD5 {digest}, expected {source.md5}; try again, or "
                            f"download it by hand and put it at {target}")
        if check:
            check(Path(partial))
        os.replace(partial, target)
    except _CutOff as e:
        raise DataError(f"{prefix}the download of {source.filename} from {source.url} was cut off ({e}); try "
                        f"again, or download it by hand and put it at {target}") from None
    except urllib.error.HTTPError as e:
        raise DataError(f"{prefix}could not download {source.filename} from {source.url} "
                        f"(HTTP {e.code} {_one_line(e.reason)}); download it by hand and "
                        f"put it at {target}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError,
            http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise DataError(f"{prefix}could not download {source.filename} from {source.url} "
                        f"({_one_line(reason)}); you appear to be offline: download it by "
                        f"hand and put it at {target}") from None
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def _download(source: Source, out: BinaryIO) -> str:
    """Stream `source.url` into the open file `out` with a progress bar; return its MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(source.url, timeout=30) as response:
        size = response.headers.get("Content-Length")
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task(source.filename, total=int(size) if size else None)
            received = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                progress.advance(task, len(chunk))
    if size and received < int(size):
        raise _CutOff(f"got {received} of {size} bytes")
    return digest.hexdigest()


class _CutOff(Exception):
    """The connection closed before the promised Content-Length arrived."""


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(archive: Path, root: Path) -> None:
    """Unpack a tarball into `root`. Every member is checked before anything is
    written: absolute paths, '..' and links could write outside `root`."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            path = PurePosixPath(member.name)
            if (path.is_absolute() or ".." in path.parts
                    or not (member.isfile() or member.isdir())):
                raise DataError(f"refusing to unpack {archive}: unsafe member {member.name!r}")
        for member in members:
            target = root.joinpath(*PurePosixPath(member.name).parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split())


def stratified_split(y: np.ndarray, count: int,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out), both in input order. Exactly `count` are held out,
    spread over classes in proportion, so small splits still cover them all."""
    labels, counts = np.unique(y, return_counts=True)
    share = count / len(y) * counts
    quota = np.floor(share).astype(np.int64)
    # Seats left by rounding down go to the largest remainders, ties broken at random.
    by_remainder = np.lexsort((rng.random(len(labels)), quota - share))
    quota[by_remainder[:count - quota.sum()]] += 1
    held = np.zeros(len(y), dtype=bool)
    for label, seats in zip(labels, quota):
        held[rng.permutation(np.flatnonzero(y == label))[:seats]] = True
    return torch.from_numpy(np.flatnonzero(~held)), torch.from_numpy(np.flatnonzero(held))


def hold_out_test(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> Raw:
    """A fixed test split for datasets that ship without one."""
    rest, test = stratified_split(y.numpy(), round(_TEST_FRACTION * len(y)), np.random.default_rng(_TEST_SEED))
    return Raw(x[rest], y[rest], x[test], y[test], num_classes)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 images to size x size (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = size < max(x.shape[-2:])
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(x), _CHUNK):
        part = F.interpolate(x[i:i + _CHUNK].float(), size=(size, size), mode="bilinear",
                             align_corners=False, antialias=shrink)
        out[i:i + _CHUNK] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out
