"""Prometheus's own tools for tests: `promtool` and a real server over a backfilled TSDB.

`.ci/run` installs them (Debian's `prometheus` package); elsewhere a test that needs
them is skipped with the reason, never faked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is missing: .ci/run installs Debian's prometheus package")
        pytest.skip(f"{binary} is not installed (apt-get install prometheus)")
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def prometheus_server(openmetrics: str, workdir: Path, port: int) -> Iterator[str]:
    """Prometheus on 127.0.0.1:`port` whose TSDB holds `openmetrics`, backfilled."""
    data = workdir / "data"
    source = workdir / "input.om"
    source.write_text(openmetrics)
    created = promtool("tsdb", "create-blocks-from", "openmetrics", str(source), str(data))
    assert created.returncode == 0, created.stderr
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  evaluation_interval: 1m\n")
    log = (workdir / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            require("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise AssertionError("prometheus did not start: " + log.name)
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(30)
        log.close()
