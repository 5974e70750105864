"""Stage decide (rule kinds, runtime): the table of each kind's runtime half, by the kind's name.

The names are those of the policy side's table (tosengine.policy.kinds.KINDS); importing this module
fails if the two differ, so a kind can never be checked but not run, or run as another kind.
"""

from __future__ import annotations

from collections.abc import Mapping

from tosengine.errors import PolicyError
from tosengine.policy.kinds import KINDS
from tosengine.runtime.kinds.base import KindStore, Roles, RuntimeKind, StateOptions
from tosengine.runtime.kinds.expect import EXPECT
from tosengine.runtime.kinds.match import MATCH
from tosengine.runtime.kinds.sequence import SEQUENCE
from tosengine.runtime.kinds.threshold import THRESHOLD

__all__ = ["RUNTIME_KINDS", "KindStore", "Roles", "RuntimeKind", "StateOptions", "runtime_kind"]

RUNTIME_KINDS: Mapping[str, RuntimeKind] = {k.name: k for k in (MATCH, THRESHOLD, SEQUENCE, EXPECT)}

if set(RUNTIME_KINDS) != set(KINDS):  # pragma: no cover - a kind registered on one side only
    raise ImportError(f"rule kinds differ: policy side {sorted(KINDS)}, runtime side {sorted(RUNTIME_KINDS)}")


def runtime_kind(name: str) -> RuntimeKind:
    """The runtime half of the kind `name`; an unknown kind is an error, never a fallthrough."""
    kind = RUNTIME_KINDS.get(name)
    if kind is None:
        raise PolicyError([], f"rule kind `{name}` has no runtime in tosengine.runtime.kinds.RUNTIME_KINDS")
    return kind
