"""The hash chain: a canonical encoding of a violation row and the hash that links it to the previous."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "GENESIS",
    "HASHED",
    "HASHED_IF_SET",
    "HASHED_REPEATS",
    "canonical",
    "head_mac",
    "key_check",
    "link_hash",
    "utc_text",
]

GENESIS = "0" * 64
# The columns a row's hash covers, in a fixed order. `hash` itself is the only column left out.
HASHED = (
    "seq",
    "id",
    "policy",
    "rule",
    "policy_version",
    "clause",
    "subject",
    "key",
    "severity",
    "action",
    "message",
    "time",
    "recorded_at",
    "evidence",
    "evidence_events",
    "causes",
    "detail",
    "engine_version",
    "prev_hash",
)


# Columns added after rows were first chained: a row's hash covers one only when its value is not the
# default every earlier row holds, so rows written before the column existed verify as they did, and
# changing the value either way (to or from the default) still breaks the hash.
HASHED_IF_SET = {"mode": "enforce"}

# The same for a repeat record (its own chain).
HASHED_REPEATS = (
    "seq",
    "id",
    "repeat_of",
    "policy",
    "rule",
    "subject",
    "key",
    "count",
    "time",
    "first",
    "last",
    "evidence",
    "evidence_events",
    "recorded_at",
    "engine_version",
    "prev_hash",
)


def utc_text(t: datetime) -> str:
    """Times hash as UTC microsecond text, whatever the database hands back (naive UTC in SQLite)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: dict[str, Any], columns: tuple[str, ...] = HASHED) -> bytes:
    """Canonical JSON of the hashed columns: sorted keys, no spaces, UTF-8."""
    values = {k: utc_text(row[k]) if isinstance(row[k], datetime) else row[k] for k in columns}
    for k, default in HASHED_IF_SET.items():
        if row.get(k, default) != default:
            values[k] = row[k]
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def link_hash(row: dict[str, Any], key: bytes | None = None, columns: tuple[str, ...] = HASHED) -> str:
    """SHA-256 of the canonical row (which includes prev_hash); HMAC-SHA-256 when a secret key is set."""
    data = canonical(row, columns)
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def head_mac(key: bytes, name: str, count: int, last_seq: int, head_hash: str) -> str:
    """HMAC-SHA-256, under the audit key, of a chain's head: who can write the database but does not
    hold the key cannot move the head (to hide deleted rows at the end) and sign it again."""
    data = json.dumps([name, count, last_seq, head_hash], separators=(",", ":")).encode("utf-8")
    return hmac.new(key, b"tosengine chain head v1\n" + data, hashlib.sha256).hexdigest()


def key_check(key: bytes) -> str:
    """What the log stores (meta `key_check`) to recognise its key without revealing it: a writer or a
    verifier with no key, or another key, is refused instead of appending rows no one can check."""
    return hmac.new(key, b"tosengine audit key check v1", hashlib.sha256).hexdigest()
