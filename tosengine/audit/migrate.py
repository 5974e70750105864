"""Stage audit (schema): run the Alembic migrations that ship as tosengine.migrations (`db upgrade`).

The scripts live in the top-level migrations/ folder of the source tree and are installed inside the
package (pyproject.toml maps the folder to tosengine.migrations), so a wheel has them too.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from tosengine.errors import AuditError

if TYPE_CHECKING:  # Alembic is loaded only to migrate: opening a log already at SCHEMA_HEAD skips it (0.25 s)
    from alembic.config import Config

__all__ = ["SCHEMA_HEAD", "alembic_config", "head_revision", "migrations_dir", "revision_of", "upgrade_database"]

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
    from alembic import command

    cfg = alembic_config()
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes opening a fresh database at once (Kafka workers, a replay beside serve) would
            # both create the tables; the loser failed on a duplicate. The second now waits here, then
            # finds the schema at head.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
