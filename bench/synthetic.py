"""Synthetic workloads: a pack of N simple rules at a chosen violation rate; many distinct subjects."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

START = datetime(2026, 3, 1, tzinfo=UTC)


def rules_pack(n: int) -> str:
    """One policy with `n` simple match rules, each on its own event type and a data field."""
    rules = "\n".join(
        f'  - id: r{i}\n    match: event.type == "bench.t{i}" and event.data.flag == "bad" and event.data.n >= 0'
        for i in range(n)
    )
    return f"policy: bench\ntitle: Bench\nclause: Synthetic rules.\nrules:\n{rules}\n"


def rules_events(n_rules: int, n_events: int, violation_rate: float, seed: int = 7) -> list[str]:
    """Events spread over the rules' types; about `violation_rate` of them break their rule."""
    rng = random.Random(seed)
    out = []
    for i in range(n_events):
        bad = rng.random() < violation_rate
        out.append(
            json.dumps(
                {
                    "id": f"e{i}",
                    "type": f"bench.t{rng.randrange(n_rules)}",
                    "subject": f"account:{rng.randrange(10_000)}",
                    "time": (START + timedelta(milliseconds=10 * i)).isoformat().replace("+00:00", "Z"),
                    "data": {"flag": "bad" if bad else "ok", "n": i},
                },
                separators=(",", ":"),
            )
        )
    return out


def distinct_subject_events(n_events: int, spacing_ms: int = 50) -> list[str]:
    """Default-pack traffic where every event has its own subject (the memory workload)."""
    out = []
    for i in range(n_events):
        t = (START + timedelta(milliseconds=spacing_ms * i)).isoformat().replace("+00:00", "Z")
        kind = i % 4
        if kind == 0:
            ev = {
                "type": "account.engagement",
                "data": {
                    "action": "like",
                    "target": f"post:{i}",
                    "client": {"name": "instagram-ios", "attested": True},
                },
            }
        elif kind == 1:
            ev = {"type": "account.login", "data": {"origin": "facebook.com", "device_id": f"device:{i}"}}
        elif kind == 2:
            ev = {"type": "account.profile_view", "data": {"target": f"account:{i + 1}"}}
        else:
            ev = {"type": "enforcement.info_request", "data": {"case_id": f"C{i}", "due_days": 1}}
        out.append(json.dumps({"id": f"m{i}", "subject": f"account:{i}", "time": t, **ev}, separators=(",", ":")))
    return out
