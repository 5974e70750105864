"""A progress bar on stderr for long replays and diffs: rich, only when stderr is a terminal.

Never on stdout (JSON output stays clean), never when stderr is a file or a pipe (CI logs, tests), and
not while rows are printed to the same terminal (the bar would tear them).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich is imported only when a bar is shown: a run without one does not load it
    from rich.progress import Progress, TaskID

__all__ = ["ProgressBar"]


class ProgressBar:
    """Bytes of input read, out of `total` (None: unknown); a no-op unless `stream` (stderr by default) is a
    terminal and `live` (where rows are printed while the bar runs, if anywhere) is not one. Use as a
    context manager; `advance(n)` after each n bytes."""

    def __init__(
        self, description: str, total: int | None, *, stream: TextIO | None = None, live: TextIO | None = None
    ) -> None:
        stream = stream if stream is not None else sys.stderr
        self.enabled = stream.isatty() and not (live is not None and live.isatty())
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._pending = 0
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=stream),
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        """Count `n` more bytes read (the bar redraws a few times a second, so this is cheap)."""
        if self._progress is None or self._task is None:
            return
        self._pending += n
        if self._pending >= 1 << 16:
            self._progress.advance(self._task, self._pending)
            self._pending = 0

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, self._pending)
            self._progress.stop()
