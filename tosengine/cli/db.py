"""`tosengine db upgrade`: create or migrate the audit database to the latest schema."""

from __future__ import annotations

import argparse
from typing import TextIO

from tosengine.audit.connect import connect, database_errors, masked
from tosengine.audit.migrate import upgrade_database
from tosengine.cli.common import EXIT_OK, Command, db_arg, db_url

__all__ = ["DB"]


def _arguments(d: argparse.ArgumentParser) -> None:
    dsub = d.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    du = dsub.add_parser("upgrade", help="create or migrate the audit database to the latest schema")
    db_arg(du)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    url = db_url(args.db)
    engine = connect(url)
    try:
        with database_errors(url, "migrate"):
            upgrade_database(engine)
    finally:
        engine.dispose()
    print(f"ok: {masked(url)} is at the latest schema", file=out)
    return EXIT_OK


DB = Command("db", "manage the audit database", _arguments, _run)
