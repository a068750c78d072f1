"""Dataset loaders, offline: downloads are served by a local HTTP server from tiny
archives written in the official formats, so fetch -> verify -> unpack -> parse runs
for real."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.base.errors import DataError
from explorer.base.settings import VAL_IMAGES
from explorer.trial import data, readers
from explorer.trial.readers import Source

# ---------------------------------------------------------------- helpers

@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving `served/`, counting GET requests."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def publish(filename: str, payload: bytes, md5: str | None = None) -> Source:
        (served / filename).write_bytes(payload)
        return Source(f"http://127.0.0.1:{httpd.server_port}/{filename}", filename,
                      md5 or hashlib.md5(payload).hexdigest())

    yield SimpleNamespace(publish=publish, requests=requests)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def closed_port():
    """A local port nobody listens on: connecting fails at once, like being offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _cifar_batch(n: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray, list[int]]:
    x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [i % 10 for i in range(n)]
    # The official batches are Python 2 pickles: byte-string keys once loaded.
    return pickle.dumps({b"batch_label": b"test", b"data": x, b"labels": labels}), x, labels


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


# ---------------------------------------------------------------- digits

@pytest.mark.parametrize("resolution", [16, 32])
def test_digits_shapes_and_types(resolution):
    s = data.load("digits", resolution=resolution)
    for x, y in [(s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)]:
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape[1:] == (1, resolution, resolution) and len(x) == len(y)
        assert y.min() >= 0 and y.max() <= 9
    assert len(s.train_y) + len(s.val_y) + len(s.test_y) == 1797
    assert len(s.test_y) == pytest.approx(0.2 * 1797, abs=10)
    assert len(s.val_y) == pytest.approx(0.1 * (1797 - len(s.test_y)), abs=10)
    assert (s.num_classes, s.in_channels, s.flip) == (10, 1, False)
    assert s.train_x.max() > 200  # scaled from 0..16 to 0..255
    pixels = s.train_x.double() / 255
    assert s.mean[0] == pytest.approx(pixels.mean().item())
    assert s.std[0] == pytest.approx(pixels.std(unbiased=False).item())


def _rows(*xs: torch.Tensor) -> list[bytes]:
    return sorted(row.numpy().tobytes() for x in xs for row in x)


def test_digits_deterministic_and_val_comes_from_train():
    a = data.load("digits", resolution=8, seed=3)
    b = data.load("digits", resolution=8, seed=3)
    other = data.load("digits", resolution=8, seed=4, val_images=400)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.val_x, other.val_x[:len(a.val_x)])
    # The test split never moves; val is carved out of the same training part.
    assert torch.equal(a.test_x, other.test_x) and torch.equal(a.test_y, other.test_y)
    assert _rows(a.train_x, a.val_x) == _rows(other.train_x, other.val_x)


def test_train_images_is_a_class_balanced_deterministic_subset():
    full = data.load("digits", resolution=8)
    a = data.load("digits", resolution=8, train_images=100)
    b = data.load("digits", resolution=8, train_images=100)
    assert len(a.train_y) == 100 and torch.equal(a.train_x, b.train_x)
    assert a.train_y.bincount().tolist() == [10] * 10
    # validation and test don't move: proxies of every size are scored on the same images
    assert torch.equal(a.val_x, full.val_x) and torch.equal(a.test_x, full.test_x)
    assert set(_rows(a.train_x)) <= set(_rows(full.train_x))


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError) as error:
        data.load("imagenet")
    message = str(error.value)
    assert "'imagenet'" in message
    for choice in (*data.DATASETS, "imagefolder:PATH"):
        assert choice in message


def test_bad_arguments():
    with pytest.raises(DataError, match="--val-images 1438 leaves no training images"):
        data.load("digits", val_images=1438)
    with pytest.raises(DataError, match="--train-images must be a positive"):
        data.load("digits", train_images=0)
    with pytest.raises(DataError, match="resolution"):
        data.load("digits", resolution=0)


def test_default_data_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_data_dir() == tmp_path / "explore" / "data"


# ---------------------------------------------------------------- downloads

def test_cifar10_download_unpack_parse_and_cache(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files, train_labels = {"cifar-10-batches-py/batches.meta": pickle.dumps({})}, []
    for i in range(1, 6):
        files[f"cifar-10-batches-py/data_batch_{i}"], _, labels = _cifar_batch(4, rng)
        train_labels += labels
    files["cifar-10-batches-py/test_batch"], test_x, test_labels = _cifar_batch(6, rng)
    source = server.publish("cifar-10-python.tar.gz", _tarball(files))
    monkeypatch.setitem(data.SOURCES, "cifar10", (source,))

    s = data.load("cifar10", resolution=32, data_dir=tmp_path / "cache", val_images=5)
    assert (s.num_classes, s.in_channels, s.flip) == (10, 3, True)
    assert len(s.train_y) + len(s.val_y) == 20 and len(s.val_y) > 0
    assert sorted(torch.cat([s.train_y, s.val_y]).tolist()) == sorted(train_labels)
    assert torch.equal(s.test_x, torch.from_numpy(test_x).reshape(6, 3, 32, 32))
    assert s.test_y.tolist() == test_labels
    assert server.requests == ["/cifar-10-python.tar.gz"]

    small = data.load("cifar10", resolution=16, data_dir=tmp_path / "cache")
    assert small.train_x.shape[1:] == (3, 16, 16) and small.train_x.dtype == torch.uint8
    assert len(server.requests) == 1  # served from the cache


@pytest.mark.parametrize("name, flip", [("mnist", False), ("fashion-mnist", True)])
def test_idx_download_parse_and_cache(name, flip, server, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    train_y, test_y = np.arange(30) % 10, np.arange(10)[::-1]
    payloads = [_idx(train_x, 2051), _idx(train_y, 2049), _idx(test_x, 2051), _idx(test_y, 2049)]
    sources = tuple(server.publish(f"{name}-{i}.gz", p) for i, p in enumerate(payloads))
    monkeypatch.setitem(data.SOURCES, name, sources)

    s = data.load(name, resolution=28, data_dir=tmp_path / "cache", val_images=6)
    assert (s.in_channels, s.flip, s.num_classes) == (1, flip, 10)
    assert torch.equal(s.test_x, torch.from_numpy(test_x).unsqueeze(1))
    assert s.test_y.tolist() == test_y.tolist()
    assert (len(s.train_y), len(s.val_y)) == (24, 6)
    assert (tmp_path / "cache" / name / f"{name}-0.gz").is_file()
    assert len(server.requests) == 4

    resized = data.load(name, resolution=32, data_dir=tmp_path / "cache")
    assert resized.train_x.shape[1:] == (1, 32, 32)
    assert len(server.requests) == 4


def test_idx_with_wrong_magic_is_rejected(server, tmp_path, monkeypatch):
    labels = server.publish("labels.gz", _idx(np.arange(3), 2049))
    monkeypatch.setitem(data.SOURCES, "mnist", (labels,) * 4)
    with pytest.raises(DataError, match="magic number 2051"):
        data.load("mnist", data_dir=tmp_path)


def test_checksum_mismatch_removes_the_download(server, tmp_path):
    source = server.publish("file.bin", b"payload", md5="0" * 32)
    with pytest.raises(DataError, match="checksum") as error:
        data.fetch(source, tmp_path / "cache")
    assert str(tmp_path / "cache" / "file.bin") in str(error.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_message_says_where_to_put_the_file(tmp_path, closed_port):
    url = f"http://127.0.0.1:{closed_port}/cifar-10-python.tar.gz"
    source = Source(url, "cifar-10-python.tar.gz", "0" * 32)
    with pytest.raises(DataError) as error:
        data.fetch(source, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"could not download cifar-10-python.tar.gz from {url} (")
    assert "offline" in message
    assert message.endswith(f"put it at {tmp_path / 'cifar-10-python.tar.gz'}")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cache_offline_says_so(tmp_path, closed_port):
    (tmp_path / "f.gz").write_bytes(b"truncated")
    source = Source(f"http://127.0.0.1:{closed_port}/f.gz", "f.gz", "0" * 32)
    with pytest.raises(DataError, match="corrupt") as error:
        data.fetch(source, tmp_path)
    assert str(tmp_path / "f.gz") in str(error.value)
    assert (tmp_path / "f.gz").read_bytes() == b"truncated"


def test_corrupt_cache_online_is_replaced(server, tmp_path):
    source = server.publish("f.gz", b"the real thing")
    (tmp_path / "f.gz").write_bytes(b"truncated")
    assert data.fetch(source, tmp_path).read_bytes() == b"the real thing"
    assert data.fetch(source, tmp_path).read_bytes() == b"the real thing"
    assert len(server.requests) == 1


def test_http_error_is_not_called_offline(server, tmp_path):
    source = server.publish("present.gz", b"x")
    missing = Source(source.url.replace("present", "missing"), "missing.gz", source.md5)
    with pytest.raises(DataError, match="HTTP 404") as error:
        data.fetch(missing, tmp_path)
    assert "offline" not in str(error.value)
    assert str(tmp_path / "missing.gz") in str(error.value)


def test_unsafe_tarball_is_refused(server, tmp_path, monkeypatch):
    source = server.publish("evil.tar.gz", _tarball({"../escaped": b"x"}))
    monkeypatch.setitem(data.SOURCES, "cifar10", (source,))
    with pytest.raises(DataError, match="unsafe member"):
        data.load("cifar10", data_dir=tmp_path / "cache")
    assert not (tmp_path / "escaped").exists()


# ---------------------------------------------------------------- imagefolder

def _write_images(folder: Path, classes: dict[str, int]) -> None:
    rng = np.random.default_rng(2)
    for name, count in classes.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            size = (10 + i, 12)  # sizes differ, as in real folders
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_imagefolder_with_own_test_split(tmp_path):
    _write_images(tmp_path, {"cat": 10, "dog": 5})
    (tmp_path / "notes.txt").write_text("not a class")
    s = data.load(f"imagefolder:{tmp_path}", resolution=8, val_images=None)
    assert (s.num_classes, s.in_channels, s.flip) == (2, 3, True)
    assert s.train_x.shape[1:] == (3, 8, 8) and s.train_x.dtype == torch.uint8
    assert len(s.train_y) + len(s.val_y) + len(s.test_y) == 15
    assert sorted(torch.cat([s.train_y, s.val_y, s.test_y]).tolist()) == [0] * 10 + [1] * 5
    assert len(s.test_y) == 3 and set(s.test_y.tolist()) == {0, 1}


def test_imagefolder_with_train_and_test_folders(tmp_path):
    _write_images(tmp_path / "train", {"a": 4, "b": 4, "c": 4})
    _write_images(tmp_path / "test", {"b": 2, "c": 1})
    s = data.load(f"imagefolder:{tmp_path}", resolution=16, val_images=3)
    assert s.num_classes == 3
    assert len(s.train_y) + len(s.val_y) == 12
    assert s.test_y.tolist() == [1, 1, 2]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="no class folders"):
        data.load(f"imagefolder:{tmp_path}")
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="one class folder \\(cat\\); classification needs at least 2"):
        data.load(f"imagefolder:{tmp_path}")
    (tmp_path / "dog").mkdir()
    with pytest.raises(DataError, match="no images"):
        data.load(f"imagefolder:{tmp_path}")
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as error:
        data.load(f"imagefolder:{tmp_path}")
    assert str(tmp_path / "cat" / "broken.png") in str(error.value)


# ---------------------------------------------------------------- Fashion-MNIST: where it is found

def _idx_dataset(tmp_path, server, monkeypatch, name="fashion-mnist"):
    """A tiny IDX dataset published on the server, with the decompressed checksums and
    counts a recompressed copy is verified by; returns (sources, the files' raw bytes)."""
    rng = np.random.default_rng(2)
    arrays = [(rng.integers(0, 256, size=(40, 28, 28)), 2051), (np.arange(40) % 10, 2049),
              (rng.integers(0, 256, size=(10, 28, 28)), 2051), (np.arange(10), 2049)]
    raws = [gzip.decompress(_idx(a, magic)) for a, magic in arrays]
    sources = []
    for filename, raw, (a, _) in zip(readers.IDX_FILES, raws, arrays):
        published = server.publish(filename, gzip.compress(raw, mtime=0))
        sources.append(Source(published.url, filename, published.md5, hashlib.md5(raw).hexdigest(), len(a)))
    monkeypatch.setitem(data.SOURCES, name, tuple(sources))
    return tuple(sources), raws


def _install(folder: Path, raws, level: int = 1) -> None:
    """Recompressed copies, as Debian's package holds them: other .gz bytes, same contents."""
    folder.mkdir(parents=True, exist_ok=True)
    for filename, raw in zip(readers.IDX_FILES, raws):
        (folder / filename).write_bytes(gzip.compress(raw, compresslevel=level, mtime=1))


def test_lookup_order_cache_then_system_package_then_download(server, tmp_path, monkeypatch):
    sources, raws = _idx_dataset(tmp_path, server, monkeypatch)
    system, cache = tmp_path / "usr-share", tmp_path / "cache"
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", (system,))
    _install(system, raws)
    assert (system / sources[0].filename).read_bytes() != (server_file := gzip.compress(raws[0], mtime=0))
    assert hashlib.md5(server_file).hexdigest() == sources[0].md5

    s = data.load("fashion-mnist", resolution=28, data_dir=cache, val_images=10)
    assert len(s.train_y) + len(s.val_y) == 40 and len(s.test_y) == 10
    assert server.requests == [] and not (cache / "fashion-mnist").exists()  # the package's copy, verified

    # A package copy with other contents is passed over: the file is downloaded into the cache.
    _install(system, [raws[0][:-1] + b"\x00"] + raws[1:])
    data.load("fashion-mnist", resolution=28, data_dir=cache, val_images=10)
    assert server.requests == ["/train-images-idx3-ubyte.gz"]
    assert (cache / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()

    # The cache comes first: with the package gone, hand-placed (recompressed) copies serve.
    for file in system.iterdir():
        file.unlink()
    _install(cache / "fashion-mnist", raws, level=9)
    data.load("fashion-mnist", resolution=28, data_dir=cache, val_images=10)
    assert server.requests == ["/train-images-idx3-ubyte.gz"]


def test_header_count_must_match(server, tmp_path, monkeypatch):
    sources, raws = _idx_dataset(tmp_path, server, monkeypatch)
    wrong = tuple(Source(s.url, s.filename, s.md5, None, 41 if i == 0 else s.count) for i, s in enumerate(sources))
    monkeypatch.setitem(data.SOURCES, "fashion-mnist", wrong)
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", ())
    with pytest.raises(DataError, match="holds 40 items, expected 41"):
        data.load("fashion-mnist", data_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "fashion-mnist").glob("train-images*"))


def test_download_whose_contents_differ_is_not_kept(server, tmp_path, monkeypatch):
    sources, _ = _idx_dataset(tmp_path, server, monkeypatch)
    lying = tuple(Source(s.url, s.filename, s.md5, "0" * 32, s.count) for s in sources)
    monkeypatch.setitem(data.SOURCES, "fashion-mnist", lying)
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", ())
    with pytest.raises(DataError, match="decompresses to other bytes") as error:
        data.load("fashion-mnist", data_dir=tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert list((tmp_path / "cache" / "fashion-mnist").iterdir()) == []


@pytest.fixture
def cut_off_server():
    """A server that promises 1000 bytes, sends 400 and hangs up."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 400)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_cut_off_half_way_leaves_no_file(cut_off_server, tmp_path):
    source = Source(f"{cut_off_server}/f.gz", "f.gz", "0" * 32)
    with pytest.raises(DataError) as error:
        data.fetch(source, tmp_path)
    message = str(error.value)
    assert "\n" not in message and "cut off" in message and "400 of 1000 bytes" in message
    assert message.endswith(f"put it at {tmp_path / 'f.gz'}")
    assert list(tmp_path.iterdir()) == []


def _offline(port: int) -> tuple[Source, ...]:
    """Fashion-MNIST's real sources, downloaded from a port nobody listens on."""
    return tuple(dataclasses.replace(s, url=f"http://127.0.0.1:{port}/{s.filename}")
                 for s in data.SOURCES["fashion-mnist"])


def test_fashion_mnist_from_the_debian_package(fashion_mnist, tmp_path, closed_port, monkeypatch):
    """The real files, with every download pointed at a closed port: nothing is fetched."""
    monkeypatch.setitem(data.SOURCES, "fashion-mnist", _offline(closed_port))
    s = data.load("fashion-mnist", resolution=28, data_dir=tmp_path, train_images=5000)
    assert (s.num_classes, s.in_channels, s.flip) == (10, 1, True)
    assert s.val_y.bincount().tolist() == [VAL_IMAGES // 10] * 10  # class-balanced, held out
    assert s.train_y.bincount().tolist() == [500] * 10
    assert len(s.test_y) == 10_000 and s.test_y.bincount().tolist() == [1000] * 10
    assert set(_rows(s.val_x)).isdisjoint(_rows(s.train_x))
    assert list(tmp_path.iterdir()) == []  # read in place, nothing copied or downloaded
    assert data.default_dataset(tmp_path) == ("fashion-mnist", None)


def test_default_falls_back_to_digits_with_a_one_line_notice(tmp_path, closed_port, monkeypatch):
    monkeypatch.setitem(data.SOURCES, "fashion-mnist", _offline(closed_port))
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", (tmp_path / "no-package",))
    name, notice = data.default_dataset(tmp_path / "cache")
    assert name == "digits" and "\n" not in notice
    assert "apt-get install dataset-fashion-mnist" in notice
    assert str(tmp_path / "cache" / "fashion-mnist") in notice and "offline" in notice
    with pytest.raises(DataError, match="could not download train-images"):
        data.load("fashion-mnist", data_dir=tmp_path / "cache")  # asked for by name: no fallback
    assert list((tmp_path / "cache" / "fashion-mnist").iterdir()) == []
