"""`tosengine schema`: the JSON Schema of the policy file format, for editors (generated, never hand-written)."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from tosengine.cli.common import EXIT_OK, Command
from tosengine.policy.fileschema import policy_file_schema

__all__ = ["SCHEMA"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compact", action="store_true", help="one line instead of indented JSON")


def _run(args: argparse.Namespace, out: TextIO) -> int:
    schema = policy_file_schema()
    out.write(json.dumps(schema, ensure_ascii=False, indent=None if args.compact else 2) + "\n")
    return EXIT_OK


SCHEMA = Command(
    "schema",
    "print the JSON Schema (draft 2020-12) of the policy file format, for editors",
    _arguments,
    _run,
    "Print the JSON Schema (draft 2020-12) of a policy file, generated from the checker's own field "
    "tables. Point an editor's YAML support at it, e.g. `tosengine schema > policy.schema.json` and, in "
    "a policy file, `# yaml-language-server: $schema=policy.schema.json`. The schema checks shapes; "
    "`tosengine check` checks everything else.",
)
