"""Where a study's Optuna study lives: a SQLite file in the state folder, or a database server.

``sampler.storage`` names an Optuna RDB URL (``postgresql://user@host:5432/optuna``,
``mysql+pymysql://…``); without it the study keeps ``<state_dir>/optuna.db``. A database lets
a study resume on another machine and lets two studies' histories be queried with SQL.

Every function here takes a *location*: a :class:`~pathlib.Path` (the local file) or a URL
string. Passwords stay out of the URL (it is part of the study, which is logged to MLflow):
libpq reads them from ``PGPASSWORD`` or ``~/.pgpass``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from ddsearch.errors import DDSearchError

Location = Path | str
T = TypeVar("T")

RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite")
RETRY_S = 60.0  # how long a storage call is retried while the database restarts


def location(url: str | None, default: Path) -> Location:
    """The Optuna storage of a study: its URL, else the default file."""
    return url if url else default


def describe(where: Location) -> str:
    return str(where) if isinstance(where, Path) else _redact(where)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: shown as given
        return url


def check_url(url: str | None) -> None:
    """One clear line for a storage URL that cannot work (scheme, driver, password, form)."""
    if not url:
        return
    where = "sampler.storage"
    if "://" not in url:
        raise DDSearchError(f"{where}: {url!r} is not a database URL; write e.g. "
                            f"postgresql://user@127.0.0.1:5432/optuna (or leave it out for {'<state_dir>'}/optuna.db)")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise DDSearchError(f"{where}: {url!r} is not a database URL ({err})") from None
    backend = parsed.get_backend_name()
    if backend not in RDB_SCHEMES:
        raise DDSearchError(f"{where}: unsupported database {backend!r}; use postgresql://, mysql:// or sqlite:///")
    if parsed.password:
        raise DDSearchError(f"{where}: the URL holds a password, and the study (with this URL) is recorded in MLflow "
                            f"and the state folder; leave it out and set PGPASSWORD or ~/.pgpass instead")
    if backend != "sqlite" and not parsed.database:
        raise DDSearchError(f"{where}: {_redact(url)} names no database; add it, e.g. …:5432/optuna")
    try:
        parsed.get_dialect().import_dbapi()
    except Exception as err:  # noqa: BLE001 - the driver package is missing
        hint = " (pip install 'ddsearch[postgres]')" if backend.startswith("postgres") else ""
        raise DDSearchError(f"{where}: no driver for {backend}: {err}{hint}") from None


def check_reachable(url: str | None, timeout_s: int = 5) -> None:
    """Fail early, with one line, when the storage database does not answer (before a trial starts)."""
    if not url or url.startswith("sqlite"):
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args=_connect_args(url, timeout_s))
    try:
        with engine.connect():
            pass
    except Exception as err:  # noqa: BLE001 - any failure means unreachable
        first = str(getattr(err, "orig", err)).strip().splitlines()
        raise DDSearchError(f"sampler.storage {_redact(url)} is unreachable ({first[0] if first else type(err).__name__}); "
                            f"start the database or fix the URL") from None
    finally:
        engine.dispose()


def _connect_args(url: str, timeout_s: int) -> dict[str, Any]:
    return {"connect_timeout": timeout_s} if url.startswith(("postgres", "mysql")) else {}


def rdb(where: Location):
    """An Optuna ``RDBStorage`` for the location; stale pooled connections are replaced
    (``pool_pre_ping``) so a database restart costs a retry, not the study."""
    import optuna

    if isinstance(where, Path):
        where.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(f"sqlite:///{where}")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if args := _connect_args(where, 10):
        kwargs["connect_args"] = args
    return optuna.storages.RDBStorage(where, engine_kwargs=kwargs)


def exists(where: Location) -> bool:
    """Whether there may be a study to read (a database is asked; a missing file is not)."""
    return where.is_file() if isinstance(where, Path) else True


def clear(where: Location, study_name: str) -> None:
    """A fresh start of a study: forget its earlier Optuna study (the file, or the study in the database)."""
    import optuna

    if isinstance(where, Path):
        where.unlink(missing_ok=True)
        return
    try:
        optuna.delete_study(study_name=study_name, storage=rdb(where))
        print(f"optuna: removed the earlier study '{study_name}' from {describe(where)} (a fresh start)")
    except KeyError:
        pass


def retrying(call: Callable[[], T], what: str, budget_s: float = RETRY_S) -> T:
    """``call()``, retried while the database is unreachable (a restart, a failover) for up to
    ``budget_s``; other errors and the last failure are raised as they are."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    deadline = time.monotonic() + budget_s
    delay = 0.5
    while True:
        try:
            return call()
        except (OperationalError, DBAPIError) as err:
            if not (isinstance(err, OperationalError) or err.connection_invalidated) or time.monotonic() > deadline:
                raise
            import logging

            logging.getLogger(__name__).warning("optuna storage: %s failed (%s); retrying", what,
                                                str(getattr(err, "orig", err)).strip().splitlines()[0:1])
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
