"""Helpers the test modules share: the repository root, free ports, HTTP probes, and
the `nps-worker` command line run as users run it."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def http_status(port: int, path: str) -> int:
    """The status a local HTTP server answers for `path`; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Env:
    """Environment for a worker subprocess pointed at the test's SQS and receiver."""

    values: dict[str, str]

    def with_(self, **changes: str) -> dict[str, str]:
        return {**self.values, **changes}


# Every worker `nps_worker` started: conftest kills those a failing test leaves running.
spawned: list[subprocess.Popen[str]] = []


def nps_worker(
    *args: str,
    env: dict[str, str],
    module: str = "worker",
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    """`nps-worker ARGS` (or `python -m MODULE ARGS`) in the background."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    spawned.append(process)
    return process


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
