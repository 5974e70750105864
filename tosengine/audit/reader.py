"""Stage audit (reading): an existing audit log opened for reading only, for the read commands."""

from __future__ import annotations

from types import TracebackType

from tosengine.audit.connect import connect_readonly
from tosengine.audit.log import audit_key

__all__ = ["AuditReader"]


class AuditReader:
    """The audit log at `url`, read-only: never migrated, created or written (see audit/connect.py)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = connect_readonly(url)
        self.key = audit_key()

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def __enter__(self) -> AuditReader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
