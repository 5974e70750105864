"""`tosengine db upgrade [--writer-role NAME]`: create or migrate the audit database; on PostgreSQL, the
writer role."""

from __future__ import annotations

import argparse
from typing import TextIO

from tosengine.audit.connect import connect, database_errors, masked
from tosengine.audit.migrate import upgrade_database
from tosengine.audit.roles import grant_writer_role
from tosengine.cli.common import EXIT_OK, Command, db_arg, db_url

__all__ = ["DB"]


def _arguments(d: argparse.ArgumentParser) -> None:
    dsub = d.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    du = dsub.add_parser(
        "upgrade",
        help="create or migrate the audit database to the latest schema",
        description="Create or migrate the audit database to the latest schema. Run it as the role that owns "
        "the tables. On PostgreSQL, --writer-role NAME also creates NAME (if missing) with only the rights the "
        "application needs -- read, insert, update the chain heads and partition offsets, and delete superseded "
        "checkpoints -- so that the account the engine runs as cannot drop the append-only triggers or truncate "
        "(docs/audit.md). Run it again after each upgrade.",
    )
    db_arg(du)
    du.add_argument(
        "--writer-role",
        metavar="NAME",
        help="PostgreSQL: create or update the role the engine writes as (append-only rights)",
    )


def _run(args: argparse.Namespace, out: TextIO) -> int:
    url = db_url(args.db)
    engine = connect(url)
    try:
        with database_errors(url, "migrate"):
            upgrade_database(engine)
            if args.writer_role:
                grant_writer_role(engine, args.writer_role)
    finally:
        engine.dispose()
    print(f"ok: {masked(url)} is at the latest schema", file=out)
    if args.writer_role:
        print(f"ok: role {args.writer_role} may read and append, and owns nothing", file=out)
    return EXIT_OK


DB = Command("db", "manage the audit database", _arguments, _run)
