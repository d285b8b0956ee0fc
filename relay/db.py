"""SQL database access shared by the directory and the archive.

SQLite under state_dir by default; `postgresql://user@host/db` (plain URL, as an
administrator writes it) is served by psycopg 3.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from relay.files import SECRET, create_private


def normalise_url(url: str) -> str:
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


class DatabaseUnavailable(sa.exc.OperationalError):
    """The database could not be reached: says which (password hidden) and why, in one
    line. Still an OperationalError, so code that catches those keeps working."""

    url: str = "?"

    @property
    def local(self) -> bool:
        """SQLite: a file we cannot create or open, rather than a server that is down."""
        return self.url.startswith("sqlite:")

    def __str__(self) -> str:
        reason = str(self.orig).strip().splitlines()[0] if self.orig else "unreachable"
        return f"cannot reach the database {self.url}: {reason}"


def _connect_failed(context: sa.engine.ExceptionContext) -> BaseException | None:
    """handle_error: a connection that could not be opened becomes DatabaseUnavailable."""
    exc = context.sqlalchemy_exception
    if context.connection is not None or not isinstance(exc, sa.exc.OperationalError):
        return None
    failure = DatabaseUnavailable(exc.statement, exc.params, exc.orig,  # type: ignore[arg-type]
                                  connection_invalidated=exc.connection_invalidated)
    if context.engine is not None:
        url = context.engine.url
        failure.url = url.set(drivername=url.get_backend_name()).render_as_string(
            hide_password=True)
    return failure


def make_engine(url: str) -> Engine:
    engine = _make_engine(url)
    event.listen(engine, "handle_error", _connect_failed)
    return engine


def _make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            # password hashes and archived mail: 0600 whatever the umask; SQLite gives
            # the -wal and -shm files the database file's mode
            create_private(Path(path))
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            # WAL: readers do not block the writer; FULL sync: a commit survives power loss
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


# Alembic's `context` is process-global: the directory's and the archive's migrations
# must not run at the same moment in two threads of one process.
_ALEMBIC = threading.Lock()


@contextmanager
def migration_lock(engine: Engine, key: int) -> Iterator[Connection]:
    """A transaction that no other process's migration runs beside.

    Nodes, the CLI and the sync timer may start at once. PostgreSQL: an advisory
    lock held for the transaction. SQLite runs DDL outside transactions, so a
    second process could see half a schema: a file lock beside the database.
    """
    with _ALEMBIC:
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            lock_path = f"{engine.url.database}.migrate.lock"
            with os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, SECRET), "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    with engine.begin() as conn:
                        yield conn
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            return
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            yield conn
