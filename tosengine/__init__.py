"""tosengine: terms-of-service enforcement with policies compiled onto durable_rules.

The public surface; everything else is internal. See docs/ and DESIGN.md section 5.
"""

from tosengine._version import __version__ as __version__
from tosengine.errors import EventError as EventError
from tosengine.errors import MatcherError as MatcherError
from tosengine.errors import PolicyError as PolicyError
from tosengine.errors import TosEngineError as TosEngineError
from tosengine.events import Event as Event
from tosengine.events import validate_event as validate_event
from tosengine.explain import Explanation as Explanation
from tosengine.explain import explain_violation as explain_violation
from tosengine.policy.check import check_policy_set as check_policy_set
from tosengine.policy.check import check_sources as check_sources
from tosengine.policy.model import CheckedPolicySet as CheckedPolicySet
from tosengine.policy.sources import read_sources as read_sources
from tosengine.runtime.engine import Engine as Engine
from tosengine.violation import Violation as Violation

__all__ = [
    "CheckedPolicySet",
    "Engine",
    "Event",
    "EventError",
    "Explanation",
    "MatcherError",
    "PolicyError",
    "TosEngineError",
    "Violation",
    "check_policy_set",
    "check_sources",
    "explain_violation",
    "read_sources",
    "validate_event",
]
