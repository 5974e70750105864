"""Load-time safety: compiled rulesets are first created and exercised by durable_rules in a throwaway
subprocess with a timeout, so a policy set that would crash or hang the C engine is refused at load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tosengine.errors import MatcherError
from tosengine.policy.compile import Plan
from tosengine.runtime.matcher import probes

__all__ = ["SmokeRun", "smoke_spec", "smoke_test"]

# Run by path, not imported: see its docstring.
CHILD = Path(__file__).with_name("smoke_child.py")


@cache
def _durable_rules_dir() -> str:
    """Where durable_rules' compiled module is: the one directory the child imports from besides the
    standard library. Looked up once, when a smoke test first runs (not when this module loads)."""
    spec = find_spec("durable_rules_engine")
    if spec is None or spec.origin is None:
        raise MatcherError("durable_rules is not installed (no durable_rules_engine module)")
    return str(Path(spec.origin).parent)


def smoke_spec(plan: Plan) -> dict[str, Any]:
    """What the subprocess runs: every ruleset's definition and its probe messages."""
    return {"rulesets": [{"name": rs.name, "definition": rs.definition, "probes": probes(rs)} for rs in plan.rulesets]}


def smoke_test(spec: dict[str, Any], timeout: float = 30.0) -> None:
    """Run the spec in a subprocess; raise MatcherError if durable_rules crashes, hangs or misfires."""
    SmokeRun(spec, timeout).result()


class SmokeRun:
    """A smoke test under way: the subprocess starts at once and works beside the caller, who collects
    the verdict with `result()` before creating the rulesets in its own process (or `cancel()`s it).

    An engine opening an audit log starts it before the open, whose imports and connection take longer
    than the test's 40 ms, so the test costs no start-up there (Engine)."""

    def __init__(self, spec: dict[str, Any], timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._proc = subprocess.Popen(
            # Without `site` (-S: about 9 ms of the child's 33), so it is told where durable_rules is.
            [sys.executable, "-S", str(CHILD)],
            env={**os.environ, "PYTHONPATH": _durable_rules_dir()},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Fed by a thread: a spec larger than the pipe holds would otherwise block until the child reads.
        self._feeder = threading.Thread(target=self._feed, args=(json.dumps(spec),), daemon=True)
        self._feeder.start()

    def _feed(self, text: str) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(text)
            stdin.close()
        except OSError:  # the child died or was killed before reading it all: result() reports why
            pass

    def result(self) -> None:
        """Wait for the verdict; raise MatcherError if durable_rules crashed, hung or misfired."""
        self._feeder.join(max(0.0, self._deadline - time.monotonic()))
        self._proc.stdin = None  # the feeder writes and closes it; communicate() must not touch it
        try:
            out, err = self._proc.communicate(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.cancel()
            raise MatcherError(
                f"policy set refused: durable_rules did not finish loading it within {self.timeout:g} s "
                "(it hangs on some rulesets)"
            ) from None
        code = self._proc.returncode
        if code < 0:
            name = signal.Signals(-code).name
            raise MatcherError(f"policy set refused: durable_rules crashed ({name}) while loading it")
        if code != 0 or out.strip() != "ok":
            detail = (out + err).strip().splitlines()
            raise MatcherError(
                "policy set refused: durable_rules smoke test failed: " + (detail[-1] if detail else "?")
            )

    def cancel(self) -> None:
        """Stop the subprocess (the verdict is no longer wanted, or came too late)."""
        self._proc.kill()
        self._feeder.join()  # its write, if still blocked, fails now that the child is gone
        self._proc.stdin = None
        self._proc.communicate()
