"""Study storage: Optuna RDB storage on SQLite (default) or a database server.

Several processes share one SQLite file through SQLite's own locking: each
connection waits up to `SQLITE_BUSY_TIMEOUT_S` for a lock instead of failing
at once with "database is locked" (the driver's default wait is 5 s). RDB
storage is kept over Optuna's JournalStorage because only RDB storage has
heartbeats in Optuna 5.1, and heartbeats are what turn a trial of a killed
worker from RUNNING into FAIL. docs/scaling-out.md has the measurements.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from research.errors import UsageError

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///optuna.db"
STORAGE_ENV = "RESEARCH_OPTUNA_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 120
DEFAULT_HEARTBEAT_S = 20
GRACE_PERIODS = 3  # heartbeats a trial may miss before it counts as stale
MAX_RETRIES = 1  # re-queues of the parameters of a stale trial


def storage_url(given: str | None = None) -> str:
    """Return `given`, else `RESEARCH_OPTUNA_STORAGE`, else SQLite in the working directory."""
    return given or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def sqlite_file(url: str) -> Path | None:
    """Return the database file of a SQLite URL, or None for other storages and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def make_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S) -> Any:
    """Open the Optuna storage at `url` with heartbeats and one retry of stale trials."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = with_installed_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        # A server may drop idle connections while a long trial trains.
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            # Heartbeats are marked experimental since Optuna 2.9 and work as documented.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                              grace_period=GRACE_PERIODS * heartbeat_s, heartbeat_stale_trial_callback=retry)
    except (ImportError, ModuleNotFoundError) as error:
        raise UsageError(f"cannot open Optuna storage {redact(url)}: {error}; install the database driver "
                         "(psycopg2-binary for PostgreSQL, pymysql for MySQL)") from None
    except optuna.exceptions.StorageInternalError as error:
        raise UsageError(f"cannot open Optuna storage {redact(url)}: {error}") from None
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many types for a bad URL or server
        raise UsageError(f"cannot open Optuna storage {redact(url)}: {type(error).__name__}: {error}; "
                         "check the URL (for example sqlite:///optuna.db or "
                         "postgresql://user:password@host/database) and that the server runs") from None


def with_installed_driver(url: str) -> str:
    """Name psycopg2 in a plain `postgresql://` URL when psycopg 3 is not installed.

    SQLAlchemy 2.1 maps `postgresql://` to psycopg 3, while many installs (and
    this project's test extra) have psycopg2 only.
    """
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql" or importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is None:
        return url
    return f"postgresql+psycopg2{sep}{rest}"


def redact(url: str) -> str:
    """Hide the password of a database URL in messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
