"""Every file the tool writes goes through here, so none can destroy a study or leave half a file.

- A storage file (an SQLite database or an Optuna journal) is never replaced, with or without --force.
- A path the user names (`-o`, `--png`) that exists is replaced only with --force.
- Pages the tool keeps in a study's own folder (report.html, pareto.html, ...) are regenerated freely.
- Bytes go to a temporary file beside the target, then an atomic rename: an interrupted write leaves
  the old file or the new one, never a mix.
- A permission or disk error is one line naming the file (exit code 2), never a traceback.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError

SQLITE_HEADER = b"SQLite format 3\x00"


def is_storage(path: Path) -> bool:
    """Does the file hold a study: an SQLite database, or an Optuna journal (JSON lines with op codes)?"""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if head.startswith(SQLITE_HEADER):
        return True
    first = head.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def check_target(path: Path, force: bool, flag: str) -> None:
    """Refuse to write over a storage file ever, or over any existing file without --force."""
    if path.is_dir():
        raise UserError(f"{flag}: {path} is a directory; name a file")
    if not path.exists():
        return
    if is_storage(path):
        raise UserError(f"{flag}: {path} holds a study's storage; refusing to overwrite it, even with --force")
    if not force:
        raise UserError(f"{flag}: {path} exists; pass --force to replace it, or choose another path")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_parent(path: Path, flag: str) -> None:
    """Create `path`'s folder, as every write does, or say in one line why it can't be."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag}: can't write {path} ({e.strerror or e})") from None


@contextlib.contextmanager
def atomic_path(path: Path, flag: str) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, for writers that infer the format from it), renamed
    onto `path` when the block succeeds and removed when it fails."""
    path = Path(path)
    make_parent(path, flag)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".partial{path.suffix}")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result gets the usual mode
    except OSError as e:
        raise UserError(f"{flag}: can't write {path} ({e.strerror or e})") from None
    tmp = Path(tmp)
    try:
        yield tmp
        if path.exists() and is_storage(path):  # it may have appeared while we wrote
            raise UserError(f"{flag}: {path} holds a study's storage; refusing to overwrite it")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{flag}: can't write {path} ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write(path: Path, data: str | bytes | Callable[[Path], None], flag: str, force: bool = False,
          own: bool = False) -> Path:
    """Write text, bytes, or whatever `data(tmp_path)` writes, to `path` safely.

    `own`: a page the tool keeps in a study's folder, regenerated without --force (never a storage file)."""
    path = Path(path)
    check_target(path, force or own, flag)
    with atomic_path(path, flag) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
    return path
