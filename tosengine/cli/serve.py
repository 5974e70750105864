"""`tosengine serve`: the policies over CloudEvents posted by HTTP; violations to the audit log (docs/serve.md)."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import TextIO

from tosengine.cli.common import EXIT_USAGE, Command, db_arg, db_url, load_policies, policies_dir
from tosengine.errors import TosEngineError
from tosengine.serve.config import ServeConfig, lag_arg

__all__ = ["SERVE"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policies", default=None, help="policy directory (default: $TOSENGINE_POLICIES or ./policies)")
    db_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes: only 1 (one engine holds the state of the audit log's partition; scale out "
        "with `tosengine worker` on Kafka)",
    )
    p.add_argument("--max-body", type=int, default=None, metavar="BYTES", help="largest request body (default: 8 MiB)")
    p.add_argument("--max-batch", type=int, default=None, metavar="N", help="most events in a batch (default: 10000)")
    p.add_argument(
        "--max-pending",
        type=int,
        default=None,
        metavar="N",
        help="most events admitted and not yet answered; beyond, 429 with Retry-After (default: 20000)",
    )
    p.add_argument(
        "--clock-lag",
        type=_lag,
        default=None,
        metavar="D",
        help="also move the event-time clock to wall time minus D on a ticker, so deadlines fire on a quiet "
        "stream (off by default; an event more than D late is then judged after deadlines it could have met)",
    )
    p.add_argument("--clock-tick", type=float, default=None, metavar="SECONDS", help="the ticker's period (default: 1)")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM, how long to wait for admitted events to be answered before stopping (default: 30)",
    )


def _lag(text: str) -> timedelta:
    try:
        return lag_arg(text)
    except TosEngineError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.workers != 1:
        print(
            "tosengine serve: --workers must be 1: one engine holds the state of the audit log's partition "
            "(windows, obligations, the ladder), and several processes on one log would each hold part of it "
            "and write conflicting checkpoints. Run one `tosengine serve` per audit log, and scale out with "
            "`tosengine worker` (a Kafka consumer group: the state is partitioned by key).",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        config = ServeConfig.from_env(
            policies=policies_dir(args.policies),
            db=db_url(args.db),
            max_body=args.max_body,
            max_batch=args.max_batch,
            max_pending=args.max_pending,
            clock_lag=args.clock_lag,
            clock_tick=args.clock_tick,
            drain_timeout=args.drain_timeout,
        )
    except TosEngineError as exc:
        print(f"tosengine serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Checked here, before listening: a policy error is the operator's to fix, with every diagnostic.
    if load_policies(config.policies) is None:
        return EXIT_USAGE
    # Imported here: the web server is loaded only by the command that runs it.
    from tosengine.serve.server import serve

    return serve(config, args.host, args.port)


SERVE = Command(
    "serve",
    "run the policies over CloudEvents posted by HTTP",
    _arguments,
    _run,
    "Serve CloudEvents over HTTP (structured, binary and batch modes) to the policies, writing violations, "
    "accepted events and rejected ones to the audit log. An event is answered 202 only once it and its "
    "violations are durable; 400 names the field of a bad event (recorded in the dead letter); 413, 415, "
    "429 and 503 refuse a request whole. GET /healthz, /readyz and /metrics; POST /admin/reload (with "
    "TOSENGINE_ADMIN_TOKEN) or SIGHUP reloads the policies; TOSENGINE_INGEST_TOKEN requires a bearer "
    "token to post events. SIGTERM drains, writes, checkpoints and exits 0. Logs are JSON lines on stderr.",
)
