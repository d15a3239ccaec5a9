"""The console script's entry: a SIGTERM (or SIGHUP) is a clean stop from the first instant.

Importing the worker (boto3, FastStream, OpenTelemetry) takes about a second, and
the app installs its graceful handler only once it runs. A SIGTERM before that
(Kubernetes scaling in a pod that is still starting) would otherwise end the process
with status 143. Nothing has been received yet, so exiting 0 is the truth.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _stop_before_start(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> int:
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _stop_before_start)
    from .cli import main as cli_main  # the slow import, now interruptible

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
