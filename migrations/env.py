"""Alembic environment: uses the connection tosengine hands over, or TOSENGINE_DB / -x url=..."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from tosengine.audit.tables import METADATA

config = context.config
target_metadata = METADATA


def run_migrations_online() -> None:
    """Run with the caller's connection when given (tosengine db upgrade), else connect to the URL."""
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "TOSENGINE_DB", "sqlite:///tosengine.db"
    )
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
