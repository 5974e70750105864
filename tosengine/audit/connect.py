"""Stage audit (connections): a database URL -> a SQLAlchemy engine, for writing or for reading only.

Writers get SQLite in WAL mode with write-locking transactions. Readers never write: SQLite is
opened through a `mode=ro` URI (so the file is left byte-identical and a concurrent writer is never
blocked), PostgreSQL sessions are read-only transactions, and a database that does not exist, or
holds no audit log, or one at another schema version, is an error that says so. Every failure to
connect is an AuditError naming the URL with its password masked.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from tosengine.errors import AuditError

__all__ = ["begin_immediate", "connect", "connect_readonly", "database_errors", "masked", "parse_url"]

_HINT = (
    "check the URL (sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/dbname), that the "
    "server is running and reachable, and the credentials"
)


def masked(url: str | URL) -> str:
    """The URL as it may be printed: any password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<a malformed database URL>"


def parse_url(url: str) -> URL:
    """The parsed URL of an audit database (SQLite or PostgreSQL); AuditError otherwise."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise AuditError(f"not a database URL: {masked(url)} ({exc}); {_HINT}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise AuditError(
            f"unsupported database {parsed.get_backend_name()!r} in {masked(url)}: "
            "the audit log is on SQLite or PostgreSQL"
        )
    return parsed


@contextmanager
def database_errors(url: str | URL, doing: str) -> Iterator[None]:
    """Turn a driver's or SQLAlchemy's failure while `doing` something into an AuditError naming the URL."""
    try:
        yield
    except AuditError:
        raise
    except (SQLAlchemyError, NoSuchModuleError, ImportError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AuditError(f"cannot {doing} the audit log at {masked(url)}: {detail}; {_HINT}") from exc


def connect(url: str) -> Engine:
    """A SQLAlchemy engine for writing; SQLite gets WAL, a busy timeout and write-locking transactions."""
    parsed = parse_url(url)
    with database_errors(url, "open"):
        if parsed.get_backend_name() == "sqlite":
            eng = create_engine(parsed)

            @event.listens_for(eng, "connect")
            def _on_connect(dbapi: Any, _rec: Any) -> None:
                dbapi.isolation_level = None  # let the "begin" hook below issue BEGIN itself
                cur = dbapi.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(eng, "begin")
            def _on_begin(conn: Connection) -> None:
                begin_immediate(conn.connection.driver_connection)

            return eng
        return create_engine(parsed, pool_pre_ping=True)


def begin_immediate(driver: Any) -> None:
    """Begin a write transaction on a sqlite3 connection (every SQLite write begins here).

    IMMEDIATE takes the write lock up front: reading the chain head and appending are atomic. It is sent
    on the driver's connection: through SQLAlchemy's execution it cost about as much as the insert that
    follows. Its errors (a lock held too long) are wrapped as SQLAlchemy wraps them, so callers see one
    kind of database error."""
    try:
        driver.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise DBAPIError.instance("BEGIN IMMEDIATE", (), exc, sqlite3.Error) from exc


def connect_readonly(url: str) -> Engine:
    """A SQLAlchemy engine that can only read an existing audit log at the latest schema version."""
    parsed = parse_url(url)
    with database_errors(url, "read"):
        if parsed.get_backend_name() == "sqlite":
            eng = _sqlite_readonly(url, parsed)
        else:
            eng = create_engine(parsed, pool_pre_ping=True)

            @event.listens_for(eng, "connect")
            def _readonly(dbapi: Any, _rec: Any) -> None:
                cur = dbapi.cursor()
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                cur.close()
                dbapi.commit()

        _require_schema(eng, url)
        return eng


def _sqlite_readonly(url: str, parsed: URL) -> Engine:
    database = parsed.database
    if database in (None, "", ":memory:"):
        raise AuditError(f"no audit database at {masked(url)}: an in-memory database holds nothing to read")
    path = Path(database)
    if not path.is_file():
        raise AuditError(f"no audit database at {path} (replay or `tosengine db upgrade` creates one; see --db)")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-shm").exists():
        # A WAL database opens read-only only where its -shm file can be created; where nothing can be
        # written next to the file, no writer can be running either: read it as immutable.
        uri += "&immutable=1"
    eng = create_engine("sqlite://", creator=lambda: _sqlite3_connect(uri))

    @event.listens_for(eng, "connect")
    def _on_connect(dbapi: Any, _rec: Any) -> None:
        dbapi.isolation_level = None  # SQLAlchemy's own BEGIN (deferred): a reader never takes the write lock
        dbapi.execute("PRAGMA busy_timeout=30000")
        dbapi.execute("PRAGMA query_only=1")

    @event.listens_for(eng, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return eng


def _sqlite3_connect(uri: str) -> Any:
    import sqlite3

    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _require_schema(eng: Engine, url: str) -> None:
    """An audit log at the schema version this tosengine writes; never migrated from here."""
    from tosengine.audit.migrate import SCHEMA_HEAD, revision_of

    with eng.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        if "violations" not in tables or "alembic_version" not in tables:
            raise AuditError(
                f"{masked(url)} holds no tosengine audit log (replay or `tosengine db upgrade` creates one)"
            )
        found = revision_of(conn)
    want = SCHEMA_HEAD
    if found != want:
        raise AuditError(
            f"the audit log at {masked(url)} is at schema revision {found}, this tosengine reads "
            f"{want}: run `tosengine db upgrade --db URL` first"
        )
