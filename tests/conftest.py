"""Shared fixtures. `postgres`: a throwaway PostgreSQL server for the scale-out tests;
`fashion_mnist`: the folder of Debian's `dataset-fashion-mnist` package, installed when missing.

The session fixture installs Debian's `postgresql` when its binaries are missing
(`apt-get install -y postgresql`, as root), starts a cluster of its own
(`initdb` + `pg_ctl`) in a temporary directory on a free loopback port, owned by
the `postgres` system user when the tests run as root (initdb refuses root),
and stops and deletes it at the end. Without PostgreSQL the tests that need it
fail in CI (CI=true) and are skipped elsewhere.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: str, what: str = "PostgreSQL"):
    """Fail loudly in CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{what} tests can't run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def pg_bin() -> Path | None:
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    found.sort(key=lambda p: int(re.search(r"postgresql/(\d+)", p).group(1)))
    return Path(found[-1]).parent if found else None


def apt_install(package: str) -> str | None:
    """apt-get install a Debian package, starting no service; returns why not, or None."""
    if os.geteuid() != 0:
        return f"{package} isn't installed and only root can apt-get install it"
    if not shutil.which("apt-get"):
        return f"{package} isn't installed and there is no apt-get"
    policy = Path("/usr/sbin/policy-rc.d")  # 101: the package's scripts may not start services
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", package]):
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if run.returncode:
                return f"`{' '.join(cmd)}` failed: {(run.stderr or run.stdout).strip()[-500:]}"
    finally:
        if made_policy:
            policy.unlink()
    return None


class Postgres:
    """A cluster of our own: superuser `explore` with a password, TCP on 127.0.0.1 only."""

    user = "explore"

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.password = secrets.token_hex(8)
        self.dir = Path(tempfile.mkdtemp(prefix="explore-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.owner = None
        if os.geteuid() == 0:  # initdb refuses to run as root
            self.owner = "postgres"
            try:
                pwd.getpwnam(self.owner)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                                self.owner], check=True)
            shutil.chown(self.dir, self.owner)
        self.started = False

    def _as_owner(self, *cmd: str, **kw):
        full = ["runuser", "-u", self.owner, "--", *cmd] if self.owner else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, timeout=120, **kw)

    def start(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.owner:
            shutil.chown(pwfile, self.owner)
        init = self._as_owner(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                              f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                              "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-800:]}")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        start = self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                               "-o", options, "-w", "-t", "60", "start")
        self.started = start.returncode == 0
        if not self.started:
            log = (self.dir / "log").read_text()[-800:] if (self.dir / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()[-400:]} {log}")

    def stop(self) -> None:
        if self.started:
            self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        return (f"postgresql+psycopg://{self.user}:{self.password if password is None else password}"
                f"@127.0.0.1:{self.port}/{database}")

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as con:
            con.execute(f'create database "{name}"')
        return self.url(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    try:
        import psycopg  # noqa: F401 - the driver of postgresql+psycopg:// URLs
    except ImportError:
        unavailable("the psycopg driver is missing: pip install -e . (it's a dependency)")
    if pg_bin() is None:
        why = apt_install("postgresql")
        if why or pg_bin() is None:
            unavailable(why or "apt-get install postgresql left no /usr/lib/postgresql/*/bin/pg_ctl")
    server = Postgres(pg_bin())
    try:
        server.start()
    except Exception as e:  # noqa: BLE001
        server.stop()
        unavailable(str(e))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny proxies run fastest on one thread (and don't thrash a shared CPU); restored afterwards.

    OMP_NUM_THREADS too, which explorer.trial.trainer.set_cpu_threads respects instead of choosing for itself."""
    import os

    import torch
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    """The real Fashion-MNIST files as Debian ships them (apt-get install dataset-fashion-mnist)."""
    from explorer.trial import data
    (folder,) = data.SYSTEM_DIRS["fashion-mnist"]
    if not folder.is_dir():
        why = apt_install("dataset-fashion-mnist")
        if why or not folder.is_dir():
            unavailable(why or f"apt-get install dataset-fashion-mnist left no {folder}", "Fashion-MNIST")
    return folder
