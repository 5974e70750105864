"""tosengine: terms-of-service enforcement with policies compiled onto durable_rules.

The public surface; everything else is internal. See docs/ and DESIGN.md section 5. Names are
imported when first used (PEP 562), so `import tosengine.policy` -- the checker, for editors and CI --
loads neither durable_rules nor SQLAlchemy nor Alembic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tosengine._lazy import lazy_names
from tosengine._version import __version__ as __version__

if TYPE_CHECKING:
    from tosengine.errors import AuditError as AuditError
    from tosengine.errors import EventError as EventError
    from tosengine.errors import MatcherError as MatcherError
    from tosengine.errors import PolicyError as PolicyError
    from tosengine.errors import TosEngineError as TosEngineError
    from tosengine.event_model import Event as Event
    from tosengine.event_model import validate_event as validate_event
    from tosengine.explain import Explanation as Explanation
    from tosengine.explain import explain_violation as explain_violation
    from tosengine.policy.check import check_policy_set as check_policy_set
    from tosengine.policy.check import check_sources as check_sources
    from tosengine.policy.model import CheckedPolicySet as CheckedPolicySet
    from tosengine.policy.sources import read_sources as read_sources
    from tosengine.runtime.engine import Engine as Engine
    from tosengine.violation import Violation as Violation

# Public name -> the module that defines it.
_HOMES = {
    "AuditError": "tosengine.errors",
    "CheckedPolicySet": "tosengine.policy.model",
    "Engine": "tosengine.runtime.engine",
    "Event": "tosengine.event_model",
    "EventError": "tosengine.errors",
    "Explanation": "tosengine.explain",
    "MatcherError": "tosengine.errors",
    "PolicyError": "tosengine.errors",
    "TosEngineError": "tosengine.errors",
    "Violation": "tosengine.violation",
    "check_policy_set": "tosengine.policy.check",
    "check_sources": "tosengine.policy.check",
    "explain_violation": "tosengine.explain",
    "read_sources": "tosengine.policy.sources",
    "validate_event": "tosengine.event_model",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_names("tosengine", _HOMES, globals())
