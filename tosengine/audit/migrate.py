"""Stage audit (schema): run the Alembic migrations that ship as tosengine.migrations (`db upgrade`).

The scripts live in the top-level migrations/ folder of the source tree and are installed inside the
package (pyproject.toml maps the folder to tosengine.migrations), so a wheel has them too.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from tosengine.errors import AuditError

if TYPE_CHECKING:  # Alembic is loaded only to migrate: opening a log already at SCHEMA_HEAD skips it (0.25 s)
    from alembic.config import Config

__all__ = [
    "SCHEMA_HEAD",
    "alembic_config",
    "head_revision",
    "migrations_dir",
    "revision_of",
    "run_migrations",
    "upgrade_database",
]

# The schema revision this tosengine writes: the head of migrations/versions (a test holds the two equal).
SCHEMA_HEAD = "0008"

# The PostgreSQL advisory lock that serializes migrations of one database ("tos" "migr" in ASCII).
MIGRATION_LOCK = 0x746F736D696772


def migrations_dir() -> Path:
    """Where the installed migrations are (a directory Alembic can read)."""
    path = Path(str(files("tosengine.migrations")))
    if not (path / "env.py").is_file():
        raise AuditError(f"the audit log's migrations are missing from the installed package ({path})")
    return path


def alembic_config() -> Config:
    """An Alembic config pointing at the package's migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def head_revision() -> str:
    """The head of the package's migration scripts, as Alembic reads them (SCHEMA_HEAD is its constant)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # the package ships at least one revision
    return head


def revision_of(conn: Connection) -> str | None:
    """The schema revision the database is at, or None if it holds no migrated schema."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    found = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if found is None else str(found)


def upgrade_database(engine: Engine) -> None:
    """Bring the database to the latest schema (idempotent)."""
    with engine.connect() as conn:
        if revision_of(conn) == SCHEMA_HEAD:
            return  # the usual open: nothing to migrate, and Alembic not loaded
    if engine.dialect.name == "sqlite" and _create_sqlite(engine):
        return  # a new SQLite log, created at the head without Alembic
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes opening a fresh database at once (Kafka workers, a replay beside serve) would
            # both create the tables; the loser failed on a duplicate. The second now waits here, then
            # finds the schema at head.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        run_migrations(conn)


def run_migrations(conn: Connection) -> None:
    """Run Alembic's migrations on `conn` up to the head, and commit (whatever the database holds: a new
    SQLite file too, which upgrade_database would create without them)."""
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    conn.commit()


def _create_sqlite(engine: Engine) -> bool:
    """Create a new SQLite log at SCHEMA_HEAD from the statements the migrations leave in a new database
    (tosengine/audit/sqlite_schema.py), in one transaction; False, with nothing done, if the database
    already holds a table (it is migrated as before) or the statements are not at the head.

    Running the migrations on a new file cost loading Alembic and every script, about 0.25 s of the
    start-up of a replay into a new log (docs/performance.md); these statements take milliseconds. The
    write lock taken before looking makes two processes creating one file at once take turns: the
    second finds the tables and opens them."""
    from tosengine.audit.sqlite_schema import REVISION, STATEMENTS

    if REVISION != SCHEMA_HEAD:
        return False
    with engine.begin() as conn:  # BEGIN IMMEDIATE (audit/connect.py): the write lock, before looking
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' LIMIT 1").first():
            return False
        for statement in STATEMENTS:
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (SCHEMA_HEAD,))
    return True


def sqlite_schema_statements() -> list[str]:
    """The statements that make a new SQLite database what the migrations make of it, in the order they
    were run: each table, index and trigger as SQLite keeps its text (its implicit indexes aside)."""
    import sqlite3
    import tempfile

    from sqlalchemy import create_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'new.db'}")
        try:
            with engine.connect() as conn:
                run_migrations(conn)
        finally:
            engine.dispose()
        with sqlite3.connect(Path(tmp) / "new.db") as db:
            rows = db.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid").fetchall()
        db.close()
    return [str(sql) for (sql,) in rows]


def sqlite_schema_module(statements: list[str]) -> str:
    """The text of tosengine/audit/sqlite_schema.py for `statements` (at SCHEMA_HEAD)."""
    out = [
        '"""The statements that make a new SQLite audit log what migrations/versions make of it (at REVISION).',
        "",
        "Generated: `python -m tosengine.audit.migrate` writes this file again after a new migration;",
        "tests/test_audit.py holds it equal to what the migrations build. A new SQLite log is created from",
        "these in one transaction, without loading Alembic (tosengine/audit/migrate.py).",
        '"""',
        "",
        f"REVISION = {_quoted(SCHEMA_HEAD)}",
        "",
        "STATEMENTS = (",
    ]
    for statement in statements:
        parts = [part for line in statement.splitlines(keepends=True) for part in _short(line)]
        if len(parts) == 1:
            out.append(f"    {_quoted(parts[0])},")
            continue
        out.append("    (")
        out += [f"        {_quoted(part)}" for part in parts]
        out.append("    ),")
    out.append(")")
    return "\n".join(out) + "\n"


def _short(line: str, width: int = 90) -> list[str]:
    """A long line as pieces of at most about `width` characters, cut after spaces."""
    pieces: list[str] = []
    while len(line) > width and " " in line[:width]:
        cut = line.rindex(" ", 0, width) + 1
        pieces.append(line[:cut])
        line = line[cut:]
    return [*pieces, line]


def _quoted(text: str) -> str:
    """A Python literal of `text` quoted as the formatter quotes it (double, unless that needs escapes)."""
    if '"' in text and "'" not in text:
        return repr(text)  # single quotes, as repr() picks for a text holding a double quote
    return json.dumps(text)


if __name__ == "__main__":  # after a new migration: python -m tosengine.audit.migrate
    target = Path(__file__).with_name("sqlite_schema.py")
    target.write_text(sqlite_schema_module(sqlite_schema_statements()), encoding="utf-8")
    print(f"wrote {target}")
