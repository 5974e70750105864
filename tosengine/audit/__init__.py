"""Stage audit: violations, accepted and rejected events, policy versions -> SQL (SQLAlchemy 2).

The names below load on first use (PEP 562): a writer imports tosengine.audit.log, which never loads
the readers (verify) nor SQLAlchemy's ORM they use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tosengine._lazy import lazy_names

if TYPE_CHECKING:
    from tosengine.audit.log import AuditLog
    from tosengine.audit.verify import VerifyResult, verify_chain

__all__ = ["AuditLog", "VerifyResult", "verify_chain"]

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "AuditLog": "tosengine.audit.log",
        "VerifyResult": "tosengine.audit.verify",
        "verify_chain": "tosengine.audit.verify",
    },
    globals(),
)
