"""Load-time safety: compiled rulesets are first created and exercised by durable_rules in a throwaway
subprocess with a timeout, so a policy set that would crash or hang the C engine is refused at load."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tosengine.errors import MatcherError
from tosengine.policy.compile import Plan
from tosengine.runtime.matcher import probes

__all__ = ["smoke_spec", "smoke_test"]

# Run by path, not imported: see its docstring.
CHILD = Path(__file__).with_name("smoke_child.py")


def smoke_spec(plan: Plan) -> dict[str, Any]:
    """What the subprocess runs: every ruleset's definition and its probe messages."""
    return {"rulesets": [{"name": rs.name, "definition": rs.definition, "probes": probes(rs)} for rs in plan.rulesets]}


def smoke_test(spec: dict[str, Any], timeout: float = 30.0) -> None:
    """Run the spec in a subprocess; raise MatcherError if durable_rules crashes, hangs or misfires."""
    try:
        p = subprocess.run(
            [sys.executable, str(CHILD)], input=json.dumps(spec), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise MatcherError(
            f"policy set refused: durable_rules did not finish loading it within {timeout:g} s "
            "(it hangs on some rulesets)"
        ) from None
    if p.returncode < 0:
        name = signal.Signals(-p.returncode).name
        raise MatcherError(f"policy set refused: durable_rules crashed ({name}) while loading it")
    if p.returncode != 0 or p.stdout.strip() != "ok":
        detail = (p.stdout + p.stderr).strip().splitlines()
        raise MatcherError("policy set refused: durable_rules smoke test failed: " + (detail[-1] if detail else "?"))
