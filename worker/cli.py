"""The `nps-worker` command line: thin wrappers over the modules that do the work."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from . import __version__, dlq, stats
from .app import StartupError, run_worker
from .faststream_sqs import (
    SQS_ERRORS,
    CrtCannotServe,
    QueueNotFound,
    SQSRefused,
    calls_still_running,
)
from .health import HealthPortUnavailable
from .logs import configure_logging
from .queues import QueueMisconfigured, provision, resolve
from .settings import ConfigurationError, Settings, load_settings
from .sqs_options import make_client


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _duration(text: str) -> str:
    try:
        return stats.valid_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nps-worker",
        description="Count and sum e-commerce events from SQS into OpenTelemetry metrics.",
        epilog="Configuration comes from environment variables; see the README.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="consume the queue until SIGTERM or SIGINT")
    demo = commands.add_parser(
        "demo", help="everything on this machine: local SQS, kata traffic, the worker, a summary"
    )
    demo.add_argument(
        "--events", type=_positive_int, default=270, help="messages to send (default 270)"
    )
    demo.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        help="stop after this many seconds, with a summary of what was counted (default: "
        "when every event is counted)",
    )
    produce_cmd = commands.add_parser("produce", help="send kata scenarios to the queue")
    produce_cmd.add_argument(
        "--scenarios", type=_positive_int, default=10, help="27 messages each (default 10)"
    )
    produce_cmd.add_argument(
        "--forever", action="store_true", help="refill whenever the queue runs empty"
    )
    produce_cmd.add_argument(
        "--interval",
        type=_positive_float,
        default=1.0,
        help="seconds between depth checks with --forever",
    )
    commands.add_parser(
        "provision", help="create the queue and its DLQ with a redrive policy (idempotent)"
    )
    stats_cmd = commands.add_parser(
        "stats", help="fleet-wide totals per type, read from Prometheus (the seed's summary)"
    )
    stats_cmd.add_argument(
        "--prometheus",
        default="http://localhost:9090",
        help="Prometheus base URL (default http://localhost:9090)",
    )
    stats_cmd.add_argument(
        "--since",
        type=_duration,
        default="24h",
        help="count every process that reported within this range (default 24h)",
    )
    dlq = commands.add_parser("dlq", help="inspect the dead-letter queue or move it back")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    peek_cmd = dlq_commands.add_parser(
        "peek", help="print dead letters as JSON lines, with their reasons; consumes nothing"
    )
    peek_cmd.add_argument(
        "--limit", type=_positive_int, default=100, help="at most this many (default 100)"
    )
    redrive_cmd = dlq_commands.add_parser(
        "redrive", help="move dead letters back to the main queue (receive, send, delete)"
    )
    redrive_cmd.add_argument(
        "--limit", type=_positive_int, default=1_000_000, help="at most this many (default all)"
    )
    return parser


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    # Development only (moto, kata traffic): imported for this command alone.
    from .dev.demo import run_demo
    from .dev.local_sqs import DemoUnavailable

    try:
        return asyncio.run(
            run_demo(
                settings, events=args.events, duration=args.duration, out=sys.stdout, err=sys.stderr
            )
        )
    except DemoUnavailable as error:
        return _fail(str(error))


async def _produce(settings: Settings, args: argparse.Namespace) -> None:
    from .dev.traffic import produce

    client = make_client(settings)
    try:
        url = await client.queue_url(settings.queue)
        sent = await produce(
            client, url, scenario_count=args.scenarios, forever=args.forever, interval=args.interval
        )
        print(f"sent {len(sent)} messages to {settings.queue}")
    finally:
        client.close()


async def _provision(settings: Settings) -> None:
    client = make_client(settings)
    try:
        queues = await provision(client, settings)
        print(f"queue {queues.url}\ndead-letter queue {queues.dead_letter_url}")
    finally:
        client.close()


async def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    """0 once done; 128 + the signal's number when a signal stopped it early (after the
    batch in hand: a redrive stopped between a send and its delete would leave copies in
    both queues, and the next redrive would move the DLQ's again)."""
    stop, stopped_by = asyncio.Event(), []
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def stopping(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        stop.set()
        for each in signals:  # a second signal acts at once, as it would by default
            loop.remove_signal_handler(each)

    for signum in signals:
        loop.add_signal_handler(signum, stopping, signum)
    client = make_client(settings)
    try:
        queues = await resolve(client, settings)
        if args.dlq_command == "peek":
            for letter in await dlq.peek(client, queues.dead_letter_url, args.limit, stop):
                print(json.dumps(letter.as_json()))
        else:
            result = await dlq.redrive(client, queues.dead_letter_url, queues.url, args.limit, stop)
            source = settings.dead_letter_queue_name
            print(f"moved {result.moved} message(s) from {source} to {settings.queue}")
            if result.came_back:
                print(
                    f"{result.came_back} of them were rejected again while this ran; "
                    f"they stay in {source}"
                )
    finally:
        client.close()
    if not stopped_by:
        return 0
    _fail(f"stopped by {stopped_by[0].name}; the rest stays in the dead-letter queue")
    return 128 + stopped_by[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stats":  # reads Prometheus only: no worker settings involved
        try:
            print("\n".join(stats.fleet_summary(args.prometheus, args.since)))
        except stats.StatsUnavailable as error:
            return _fail(str(error))
        return 0
    try:
        settings = load_settings()
        configure_logging(settings)
        if args.command == "run":
            asyncio.run(run_worker(settings))
            _exit_without_waiting_for_stuck_calls()
        elif args.command == "demo":
            return _demo(settings, args)
        elif args.command == "produce":
            asyncio.run(_produce(settings, args))
        elif args.command == "provision":
            asyncio.run(_provision(settings))
        elif args.command == "dlq":
            return asyncio.run(_dlq(settings, args))
    except (ConfigurationError, StartupError, HealthPortUnavailable, QueueMisconfigured) as error:
        return _fail(str(error))
    except CrtCannotServe as error:
        return _fail(f"SQS_TRANSPORT=crt: awscrt cannot serve this configuration: {error}")
    except QueueNotFound as error:
        return _fail(f"queue {error.queue!r} does not exist; create it with `nps-worker provision`")
    except (*SQS_ERRORS, SQSRefused) as error:
        return _fail(f"SQS: {error}")
    except KeyboardInterrupt:
        return 130
    return 0


def _exit_without_waiting_for_stuck_calls() -> None:
    """Everything is settled; a call still hanging on SQS must not delay the exit."""
    stuck = calls_still_running()
    if stuck:
        logging.getLogger("worker.run").warning(
            "exiting with %d SQS call(s) still waiting for a reply", stuck
        )
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def _fail(message: str) -> int:
    print(f"nps-worker: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
