"""Stage audit (schema): run the Alembic migrations that ship as tosengine.migrations (`db upgrade`).

The scripts live in the top-level migrations/ folder of the source tree and are installed inside the
package (pyproject.toml maps the folder to tosengine.migrations), so a wheel has them too.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from tosengine.errors import AuditError

__all__ = ["alembic_config", "head_revision", "migrations_dir", "upgrade_database"]

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
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def head_revision() -> str:
    """The schema revision this tosengine writes."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # the package ships at least one revision
    return head


def upgrade_database(engine: Engine) -> None:
    """Bring the database to the latest schema (idempotent)."""
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
