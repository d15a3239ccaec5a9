"""The command line as users meet it: help, bad configuration, the demo."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest

from tests.support import ROOT, run_cli
from worker.settings import Settings

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SQS_", "AWS_"))}


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["demo"], ["produce"], ["provision"], ["stats"], ["dlq"], ["dlq", "peek"]],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "--help", env=CLEAN_ENV)
    assert result.returncode == 0
    assert "usage: nps-worker" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SQS_WAIT_TIME_SECONDS", "30"),
        ("MAX_MESSAGES_PER_BATCH", "0"),
        ("WORKER_CONCURRENCY", "many"),
        ("LOG_FORMAT", "xml"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("AWS_ENDPOINT_URL_SQS", "not-a-url"),
        ("AWS_ENDPOINT_URL", "localhost:4566"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "not-a-url"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999"),
        # More would put events in a series with no event.type (the SDK's own cap).
        ("MAX_EVENT_TYPES", "2000"),
        ("SQS_QUEUE_NAME", "events!"),
        ("SQS_QUEUE_NAME", "x" * 81),
        ("SQS_QUEUE_URL", "sqs/events"),
        ("DLQ_QUEUE_NAME", "ftp://queues/events-dlq"),
        ("DLQ_QUEUE_NAME", "events dlq"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_setting(variable: str, value: str) -> None:
    result = run_cli("run", env=CLEAN_ENV | {variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("changes", "named", "why"),
    [
        ({"SQS_VISIBILITY_TIMEOUT": "2"}, "SQS_VISIBILITY_TIMEOUT=2", "too short"),
        (
            {"SQS_WAIT_TIME_SECONDS": "20", "SQS_READ_TIMEOUT": "20"},
            "SQS_WAIT_TIME_SECONDS=20",
            "cut off mid-wait",
        ),
    ],
)
def test_settings_the_ack_design_cannot_honour_are_refused(
    changes: dict[str, str], named: str, why: str
) -> None:
    result = run_cli("run", env=CLEAN_ENV | changes)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("nps-worker: invalid configuration: ")
    assert named in line
    assert why in line


@pytest.mark.integration
def test_demo_prints_a_summary_of_exactly_the_valid_events() -> None:
    result = run_cli("demo", "--events", "270", env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["type"] for row in summary] == sorted(row["type"] for row in summary)
    assert {row["type"] for row in summary} <= {"pageview", "added-to-basket", "purchase"}
    assert sum(row["count"] for row in summary) == 200  # 20 valid in each of 10 scenarios
    pageviews = next(row for row in summary if row["type"] == "pageview")
    assert pageviews["sum"] == pageviews["count"]  # a pageview's value is always 1
    assert "dead-letter queue depth: 70" in result.stderr
    # Piped, the table is plain text: progress lines, then the final table once.
    assert "\x1b[" not in result.stderr
    assert "sent 270/270, backlog 0" in result.stderr
    assert "dead-lettered             70" in result.stderr
    assert "270 messages in" in result.stderr


@pytest.mark.integration
def test_demo_redraws_its_table_in_place_on_a_terminal() -> None:
    """On a terminal the table is drawn while the work goes on, over its last frame."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "demo", "--events", "540"],
        env=CLEAN_ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65_536)
        except OSError:  # the terminal closed: the demo has exited
            break
        if not chunk:
            break
        shown += chunk
    stdout, _ = process.communicate(timeout=120)
    os.close(controller)
    assert process.returncode == 0
    screen = shown.decode()
    frames = screen.count("\x1b[J")
    assert frames >= 2, screen  # drawn during the run, not only at the end
    assert re.search(r"\x1b\[\d+F", screen), screen  # back up over the last frame
    assert sum(json.loads(line)["count"] for line in stdout.splitlines()) == 400


def test_running_the_worker_imports_nothing_meant_for_development() -> None:
    # `worker.dev` (moto, kata traffic, the demo) is for trying the worker, not running it.
    dev_modules = {p.stem for p in (ROOT / "worker" / "dev").glob("*.py")}
    assert {"local_sqs", "kata", "demo"} <= dev_modules
    code = (
        "import sys, worker.app, worker.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('worker.dev', 'moto'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_default_dead_letter_queue_is_named_after_the_queue_with_fifo_last() -> None:
    assert Settings(sqs_queue_name="events").dead_letter_queue_name == "events-dlq"
    assert Settings(sqs_queue_name="events.fifo").dead_letter_queue_name == "events-dlq.fifo"
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo"
    assert Settings(sqs_queue_url=url).dead_letter_queue_name == "orders-dlq.fifo"
    assert len(Settings(sqs_queue_name="x" * 80).dead_letter_queue_name) == 80
