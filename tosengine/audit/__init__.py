"""Stage audit: violations, accepted and rejected events, policy versions -> SQL (SQLAlchemy 2)."""

from tosengine.audit.log import AuditLog as AuditLog
from tosengine.audit.verify import VerifyResult as VerifyResult
from tosengine.audit.verify import verify_chain as verify_chain

__all__ = ["AuditLog", "VerifyResult", "verify_chain"]
