"""The load-time smoke test's child process: run as a script, so that it imports only json and
durable_rules' C module (importing the tosengine package would cost about a second per load).

Reads {"rulesets": [{"name", "definition", "probes": [[message, expected rule or null], ...]}]} on
stdin, creates each ruleset, asserts each probe, and checks the expected rule fires. A crash or hang
here is what the parent (tosengine/runtime/smoke.py) detects; a wrong result is printed, exit 1.
"""

import json
import re
import sys

import durable_rules_engine as _dre

# An action's payload is {"t<trigger id>": {...}}: the rule name is read without parsing the rest.
_NAME = re.compile(r'\{\s*"(t\d+)"')
_OK = 0


def main() -> int:
    """Exercise every ruleset on stdin; print "ok" and return 0, or print the first failure and return 1."""
    spec = json.load(sys.stdin)
    failures: list[str] = []
    for rs in spec["rulesets"]:
        handle = _dre.create_ruleset(rs["name"], json.dumps(rs["definition"]))
        for msg, expected in rs["probes"]:
            # Keep going after an error: the worst outcome (a crash) is the one the parent must see.
            fired: list[str] = []
            try:
                status, state = _dre.assert_fact(handle, json.dumps(msg))
                if status == _OK:
                    result = _dre.start_action_for_state(handle, state)
                    while result:
                        m = _NAME.match(result[1] if isinstance(result, tuple) else result)
                        fired.append(m[1] if m else "?")
                        result = _dre.complete_and_start_action(handle, state)
                _dre.retract_fact(handle, json.dumps({"id": msg["id"], "sid": msg["sid"]}))
            except Exception as exc:
                failures.append(f"ruleset {rs['name']}: {type(exc).__name__} {exc}".strip())
                continue
            if expected is not None and expected not in fired:
                failures.append(f"ruleset {rs['name']}: {expected} did not fire for {msg} (fired {fired})")
        _dre.delete_ruleset(handle)
    if failures:
        print(failures[0])
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
