"""Schema migrations: run the Alembic scripts in migrations/ programmatically (`tosengine db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

__all__ = ["MIGRATIONS", "alembic_config", "upgrade_database"]

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config() -> Config:
    """An Alembic config pointing at the project's migrations/ directory."""
    if not (MIGRATIONS / "env.py").exists():
        raise FileNotFoundError(f"Alembic migrations not found at {MIGRATIONS} (install the project with pip -e)")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade_database(engine: Engine) -> None:
    """Bring the database to the latest schema (idempotent)."""
    cfg = alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
