"""``treadle worker MODULE:ATTR``: run queued sessions until SIGTERM (drain) or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
from typing import Any

import trio

from .common import PipeSafeStdOutSink, load_app, say
from .submit import add_queue_option, worker_checkpointer


def add_parser(commands: Any) -> None:
    worker = commands.add_parser(
        "worker", help="run sessions queued by `treadle submit` (PostgreSQL), with failover"
    )
    worker.add_argument("target", help="MODULE:ATTR naming the App or GraphBuilder to run")
    add_queue_option(worker)
    worker.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="sessions run at once (default 8)"
    )
    worker.add_argument(
        "--lease-ttl",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a worker silent this long is presumed dead and its sessions resumed elsewhere "
        "(default 30)",
    )
    worker.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="failed runs after which a session is marked failed (default 3)",
    )
    worker.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="look at the queue this often even without a notification (default 5)",
    )
    worker.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once nothing of this graph is pending or running",
    )
    worker.add_argument("--events", action="store_true", help="print every event of the runs")
    worker.set_defaults(command_fn=worker_command)


async def worker_command(args: argparse.Namespace) -> int:
    from ..events.bus import EventBus
    from ..workers.worker import Worker

    app = load_app(args.target)
    bus = EventBus([PipeSafeStdOutSink()] if args.events else [])
    async with Worker(
        app,
        checkpointer=worker_checkpointer(args.checkpointer),
        concurrency=args.concurrency,
        lease_ttl=args.lease_ttl,
        max_attempts=args.max_attempts,
        poll_interval=args.poll_interval,
        event_bus=bus,
    ) as worker:
        say(f"worker {worker.owner} serving {args.target} (concurrency {args.concurrency})")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, worker)
            if args.until_idle:
                await worker.run_until_idle()
            else:
                await worker.run_forever()
            nursery.cancel_scope.cancel(reason="the worker stopped")
        stats = worker.statistics()
    say(
        f"worker {stats.owner} stopped: claimed {stats.claimed}, completed {stats.completed}, "
        f"paused {stats.paused}, failed {stats.failed}, handed back {stats.released + stats.lost}, "
        f"resumed {stats.resumed}, recovered from dead workers {stats.recovered}"
    )
    return 0


async def _signals(worker: Any) -> None:
    """SIGTERM or a first Ctrl-C drains the worker; a second Ctrl-C stops it at once (exit 130)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not worker.draining:
                name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
                say(f"{name}: draining (finishing running steps; Ctrl-C again to stop at once)")
                worker.drain()
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt
