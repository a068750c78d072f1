"""Where studies live and what they hold: storage URLs, settings, and their trials.

A study's settings (space, budget, dataset, recipe...) are stored in the study
itself, so a rerun resumes it and a worker joins it without re-typing them: a
short JSON user attr (`explore:settings`, what optuna-dashboard shows on the
study page) and the space document, which can run to tens of kilobytes, as a
system attr keyed by its digest (out of the dashboard's way). Studies made
before the split hold the document inside the settings; both forms are read.
Settings that change what a trial's numbers mean (COMPARABLE) can't change on
resume: incomparable trials are never mixed.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .budget import format_flops
from .errors import UserError

STUDIES_DIR = Path("studies")
SETTINGS_KEY = "explore:settings"
SPACE_KEY = "explore:space:"  # + the space digest: a system attr holding the space document
METRICS = ["proxy accuracy", "FLOPs (multiply-adds)"]
COMPARABLE = ("space_digest", "budget", "max_params", "resolution", "dataset", "proxy_resolution",
              "proxy_width", "proxy_depth", "train_images", "val_images", "recipe",
              # which genotypes get trained (pre-screening) and how they train (stochastic depth):
              "prescreen", "prescreen_score", "stochastic_depth")


@dataclass
class Settings:
    space: str = "union"
    space_doc: Any = None          # the resolved space, so a worker needs no file
    space_digest: str = ""
    budget: int = 0                # FLOPs (multiply-adds) at `resolution`, 1000 classes
    max_params: int | None = None
    resolution: int = 224
    dataset: str = "digits"
    proxy_resolution: int = 16
    proxy_width: float = 0.25
    proxy_depth: int = 2
    train_images: int | None = None  # class-balanced training subset (None: the whole training split)
    val_images: int | None = None    # held-out validation images (None: explorer.data.default_val_images)
    recipe: dict = field(default_factory=dict)
    sampler: str = "nsga2"
    seed: int = 0
    trials: int = 12               # completed trials the study aims for
    # zero-cost pre-screening: train the best of `prescreen` feasible draws by `prescreen_score` (1: off)
    prescreen: int = 1
    prescreen_score: str = "synflow"
    stochastic_depth: float | None = None  # p_L of Huang et al.'s linear decay rule (None: off)
    prune: str = "none"            # "pareto": stop trials dominated at an epoch by >= prune_k others
    prune_k: int = 2
    # Optuna parameter names: short (`mobilenet.s3.b0.repeat`) or the document paths studies made before used
    short_names: bool = True

    def to_json(self) -> str:
        """The settings less the space document (stored apart, see `store_settings`)."""
        data = asdict(self)
        del data["space_doc"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        data = json.loads(text)
        data.setdefault("short_names", False)  # made before short names: keep the names its trials have
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def differences(self, other: "Settings") -> list[str]:
        """What differs, stored value first, one short item per key: `epochs 2 → 3`."""
        out = []
        for key in COMPARABLE:
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine == theirs:
                continue
            if key == "space_digest":
                out.append(f"space {other.space} (digest {theirs}) → {self.space} (digest {mine})")
            elif key == "budget":
                out.append(f"budget {format_flops(theirs)} → {format_flops(mine)}")
            elif key == "recipe":
                out += [f"{k} {_shown(theirs.get(k))} → {_shown(mine.get(k))}"
                        for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
            else:
                out.append(f"{key.replace('_', ' ')} {_shown(theirs)} → {_shown(mine)}")
        return out


def _shown(value) -> str:
    return "off" if value is None else str(value)


def store_settings(study, settings: Settings) -> None:
    """The settings as a short user attr, the space document as a system attr named by its digest."""
    study._storage.set_study_system_attr(study._study_id, SPACE_KEY + settings.space_digest,
                                         json.dumps(settings.space_doc, separators=(",", ":")))
    study.set_user_attr(SETTINGS_KEY, settings.to_json())


def study_dir(study: str) -> Path:
    return STUDIES_DIR / study


def storage_url(study: str, storage: str | None) -> str:
    """The default is SQLite at studies/<study>/study.db."""
    if storage:
        return storage
    return f"sqlite:///{study_dir(study) / 'study.db'}"


def open_storage(url: str, heartbeat: tuple[int, int] | None = None):
    """An Optuna storage for the URL; foreign or corrupt SQLite files are refused, never touched.

    `heartbeat` = (interval, grace) seconds turns on heartbeats for database storages: a running trial
    without one for the grace period is failed and retried once (see explorer.workers).
    """
    import optuna
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        _check_sqlite(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
        path = url[len("journal:"):]
        if not path:
            raise UserError("--storage: journal:PATH needs a file path, e.g. journal:/shared/studies/big.log")
        try:
            storage = optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        except OSError as e:
            raise UserError(f"--storage: can't open {url}: {e.strerror}") from None
        storage.explore_journal_path = path  # the claim lock of explorer.workers lives next to it
        return storage
    kwargs = {}
    if heartbeat:
        from .workers import retry_callback
        import inspect
        callback = ("heartbeat_stale_trial_callback"  # Optuna >= 4.9; failed_trial_callback before
                    if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                    else "failed_trial_callback")
        kwargs = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1], callback: retry_callback()}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
    except Exception as e:  # noqa: BLE001 - any driver error becomes one clear line
        hint = (" (for PostgreSQL use postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)"
                if isinstance(e, ModuleNotFoundError) and "psycopg2" in str(e) else "")
        raise UserError(f"--storage: can't open {redact(url)}: {_first_line(e)}{hint}") from None


def _engine_kwargs(url: str) -> dict:
    # SQLite: wait for a lock instead of failing at once when several workers write.
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):  # an unreachable host fails in 10 s, not minutes
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def _check_sqlite(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        raise UserError(f"--storage: {path} is not an SQLite database; refusing to overwrite it "
                        "(move it away or pick another --study)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as e:
        raise UserError(f"--storage: {path} is a corrupt SQLite database ({e}); refusing to touch it") from None
    if tables and not {"studies", "trials", "version_info"} <= tables:
        raise UserError(f"--storage: {path} is an SQLite database but not an Optuna study "
                        f"(tables: {', '.join(sorted(tables)[:5])}); refusing to touch it")


def redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_study(study: str, storage: str | None):
    """An existing study, with a clear error if there is none."""
    import optuna
    url = storage or _existing_default(study)
    store = open_storage(url)
    try:
        return optuna.load_study(study_name=study, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)] if store else []
        hint = f"; studies there: {', '.join(names)}" if names else ""
        raise UserError(f"no study named '{study}' in {redact(url)}{hint}") from None


def _existing_default(study: str) -> str:
    path = study_dir(study) / "study.db"
    if not path.exists():
        known = sorted(d.parent.name for d in STUDIES_DIR.glob("*/study.db"))
        hint = f"; known studies: {', '.join(sorted(known))}" if known else "; run `explore search` first"
        raise UserError(f"no study named '{study}' under {STUDIES_DIR}/{hint}")
    return f"sqlite:///{path}"


def settings_of(study) -> Settings:
    text = study.user_attrs.get(SETTINGS_KEY)
    if text is None:
        raise UserError(f"study '{study.study_name}' wasn't made by explore (it has no settings)")
    settings = Settings.from_json(text)
    if settings.space_doc is None and settings.space_digest:  # stored apart (older studies hold it inline)
        stored = study._storage.get_study_system_attrs(study._study_id).get(SPACE_KEY + settings.space_digest)
        if stored is None:
            raise UserError(f"study '{study.study_name}' has lost its space document "
                            f"(system attr {SPACE_KEY}{settings.space_digest})")
        settings.space_doc = json.loads(stored)
    return settings
