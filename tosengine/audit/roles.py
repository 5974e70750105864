"""Stage audit (privileges): a PostgreSQL audit database -> a writer role that can append and nothing more.

The role that runs the migrations owns the tables, and an owner can `DROP TRIGGER`, `ALTER TABLE ...
DISABLE TRIGGER USER` or `TRUNCATE` and then remove the newest rows. So the application writes as a
second role: it may read and insert everywhere, update only the rows that are meant to move (the chain
heads, whose HMAC still needs the audit key, and a worker's partition offsets), delete only superseded
checkpoints (state, not evidence), and own nothing. The append-only triggers then hold against it
(docs/audit.md, "Roles").
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, inspect, text

from tosengine.errors import AuditError

__all__ = ["MUTABLE_TABLES", "PRUNED_TABLES", "grant_writer_role"]

# Tables whose rows the writer updates in place (besides inserting). Every other table is insert-only.
MUTABLE_TABLES = ("chain_head", "kafka_offsets")
# Tables whose rows the writer deletes: a partition's checkpoints once a newer one is written
# (audit/log.py, insert_checkpoint). Without it, every write that carried a checkpoint was refused.
PRUNED_TABLES = ("checkpoints",)

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def grant_writer_role(engine: Engine, role: str) -> list[str]:
    """Create `role` (LOGIN, no password: set one with ALTER ROLE, or use the server's auth) if it does
    not exist, and give it exactly the writer's rights on the audit tables of the current schema, now
    and for tables later migrations create. Returns the statements run. AuditError on SQLite."""
    if engine.dialect.name != "postgresql":
        raise AuditError("a writer role is a PostgreSQL feature: SQLite has no roles (protect the file instead)")
    if not _ROLE.fullmatch(role):
        raise AuditError(f"not a role name tosengine creates: {role!r} (lowercase letters, digits and _)")
    statements: list[str] = []
    with engine.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        tables = set(inspect(conn).get_table_names(schema=schema))
        owner = conn.execute(text("SELECT current_user")).scalar_one()
        if role == owner:
            raise AuditError(f"the writer role must not be the owner of the tables ({owner!r}, who migrates)")
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        q = f'"{schema}"'
        statements += [] if exists else [f"CREATE ROLE {role} LOGIN"]
        statements += [
            f"GRANT USAGE ON SCHEMA {q} TO {role}",
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {q} FROM {role}",
            f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {q} TO {role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {q} TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q} GRANT SELECT, INSERT ON TABLES TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q} GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        ]
        statements += [f'GRANT UPDATE ON {q}."{t}" TO {role}' for t in MUTABLE_TABLES if t in tables]
        statements += [f'GRANT DELETE ON {q}."{t}" TO {role}' for t in PRUNED_TABLES if t in tables]
        for s in statements:
            conn.execute(text(s))
    return statements
