"""Logging of `tosengine serve`: log records -> one JSON object per line on stderr.

The access log (logger `tosengine.access`, one line per request) and the errors (every other logger,
uvicorn's included) come out as JSON lines a log shipper reads without a parser of its own. The
fields a call passes as `extra` become keys of the line. Configuring logging is process-wide, so only
the command does it (`configure_logging`); the app itself only logs.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

import orjson

__all__ = ["JsonFormatter", "configure_logging"]

# What every LogRecord carries: everything else on a record came from `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, message, the `extra` fields, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        """The line for `record`."""
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log record, uvicorn's included, to `stream` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
