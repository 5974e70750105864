"""Stage run (HTTP): a ServeConfig -> `tosengine serve` listening on uvicorn until drained and stopped."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

import uvicorn

from tosengine.serve.app import create_app
from tosengine.serve.config import ServeConfig
from tosengine.serve.logs import configure_logging
from tosengine.serve.service import Service

__all__ = ["EXIT_FATAL", "EXIT_UNWRITTEN", "DrainingServer", "serve"]

EXIT_FATAL = 2  # the policies cannot run, or the address cannot be listened on
EXIT_UNWRITTEN = 1  # stopped, but the last write or checkpoint failed (logged)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining first on SIGTERM or SIGINT: new events get 503 while the admitted ones
    are answered (for at most `drain_timeout`), then it stops listening, writes and checkpoints, and
    `serve` returns 0. (uvicorn alone stops listening at once and re-raises the signal: exit 143.) A
    second signal stops without waiting for the drain."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self.exit_status = 0
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start draining (a signal handler: it only sets state that the main loop reads)."""
        if self._drain_until is not None:
            self.should_exit = True
            return
        self.service.drain()
        self._drain_until = time.monotonic() + self.service.config.drain_timeout

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s): stop once drained."""
        stop = await super().on_tick(counter)
        if self._drain_until is not None and (self.service.pending == 0 or time.monotonic() > self._drain_until):
            return True
        return stop

    def fatal(self, problem: str) -> None:
        """The policies cannot run: stop, with exit status EXIT_FATAL."""
        print(f"tosengine serve: {problem}", file=sys.stderr)
        self.exit_status = EXIT_FATAL
        self.should_exit = True


def serve(config: ServeConfig, host: str, port: int) -> int:
    """Listen on host:port until SIGTERM or SIGINT; the exit status: 0 after a drain and a last write,
    EXIT_UNWRITTEN if that write failed, EXIT_FATAL if the policies cannot run or the address cannot be
    listened on. Configures the process's logging (JSON lines on stderr) and signals: only a command
    calls this."""
    configure_logging()
    service = Service(config)
    holder: list[DrainingServer] = []
    app = create_app(service=service, on_fatal=lambda problem: holder[0].fatal(problem))
    server = DrainingServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            access_log=False,  # the app writes its own access log, as JSON lines
            log_config=None,  # configure_logging did it
            server_header=False,
            timeout_graceful_shutdown=max(int(config.drain_timeout), 1),
        ),
        service,
    )
    holder.append(server)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app installs its reload handler
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot listen (the reason is logged)
        return EXIT_FATAL if exc.code else 0
    if server.exit_status == 0 and service.failed_to_close:
        return EXIT_UNWRITTEN
    return server.exit_status
