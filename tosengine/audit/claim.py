"""One engine at a time runs a partition of an audit log: the claim it holds while it is open.

An Engine holds one partition's state (windows, partial matches, obligations, the ladder, the
redelivery memory) and checkpoints it. Two engines on one partition, in two processes or one, would
each see part of the stream, miss each other's events in windows and deadlines, and overwrite each
other's checkpoints: the next resume would then lose what the other processed. So an engine claims its
partition when it opens, and a second one is refused until the first is closed or its process is gone.

The claim is one the operating system or the server drops with its holder, so a killed process never
leaves a partition claimed:
- SQLite: an open-file-description lock (Linux's F_OFD_SETLK) on one byte of a file beside the
  database (`<database>-lock`), at an offset given by the partition's name. Unlike a POSIX record
  lock, it is held by the open file, not by the process: a second engine in the same process is refused
  too, and closing some other descriptor of the file does not drop it. Where the system has no such
  lock, or the file system refuses it, no claim is made and a warning says so.
- PostgreSQL: a session-level advisory lock, keyed by the schema and the partition, held on a
  connection of its own until the engine closes (a crashed process's session ends with it). Advisory
  locks need no privilege, so the writer role can hold one.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
from typing import Any

from sqlalchemy import Connection, Engine

from tosengine.audit.connect import masked
from tosengine.errors import AuditError

__all__ = ["PartitionClaim", "claim_partition"]

LOG = logging.getLogger("tosengine")

# Offsets of the SQLite lock byte: far from 0 so the file stays empty, below 2**62 so any system's off_t holds it.
_BASE = 1 << 40


class PartitionClaim:
    """A held claim on one partition of an audit log; `release` gives it up (closing the engine does)."""

    def __init__(self, fd: int | None = None, conn: Connection | None = None, key: int = 0) -> None:
        self._fd = fd
        self._conn = conn
        self._key = key

    def release(self) -> None:
        """Give the partition up: another engine may open it now. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the open file description goes, and its lock with it
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # The pool's reset on return (a rollback) leaves a session's advisory lock held: unlock first.
        try:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({self._key})")
            conn.commit()
        except Exception:  # the connection is gone, and the session with its lock; do not pool it
            conn.invalidate()
        finally:
            conn.close()


def claim_partition(engine: Engine, url: str, partition: str) -> PartitionClaim:
    """Claim `partition` of the audit log `engine` opens; AuditError if another engine holds it."""
    if engine.dialect.name == "postgresql":
        return _claim_postgres(engine, url, partition)
    return _claim_sqlite(engine, url, partition)


def _refused(url: str, partition: str) -> AuditError:
    return AuditError(
        f"partition {partition!r} of the audit log at {masked(url)} is in use by another engine (another "
        "process running replay or serve on it, or an Engine not closed): one engine at a time runs a "
        "partition's state (docs/state.md); stop the other, or give this one another partition"
    )


def _key(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()


def _claim_sqlite(engine: Engine, url: str, partition: str) -> PartitionClaim:
    database = engine.url.database
    fcntl = _import_fcntl()
    if not database or database == ":memory:" or fcntl is None or not hasattr(fcntl, "F_OFD_SETLK"):
        return PartitionClaim()  # no file to share, or no lock that is the open file's own
    offset = _BASE + int.from_bytes(_key(partition)[:4], "big")
    path = f"{database}-lock"
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for an open-file-description lock).
    request = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        return _unclaimed(path, exc)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request + bytes(32 - len(request)))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):  # another open file holds the byte
            raise _refused(url, partition) from None
        return _unclaimed(path, exc)  # the file system cannot lock (some network file systems)
    return PartitionClaim(fd=fd)


def _unclaimed(path: str, exc: OSError) -> PartitionClaim:
    """No claim where the lock cannot be taken at all: the engine still runs, as it did before claims."""
    LOG.warning("cannot lock %s (%s): this engine's partition is not guarded against a second engine", path, exc)
    return PartitionClaim()


def _import_fcntl() -> Any:
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    return fcntl


def _claim_postgres(engine: Engine, url: str, partition: str) -> PartitionClaim:
    conn = engine.connect()
    try:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        key = int.from_bytes(_key(str(schema), partition)[:8], "big", signed=True)
        held = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})").scalar_one()
        conn.commit()  # the lock is the session's: it outlives the transaction, which must not stay open
    except BaseException:
        conn.close()
        raise
    if not held:
        conn.close()
        raise _refused(url, partition)
    return PartitionClaim(conn=conn, key=key)
