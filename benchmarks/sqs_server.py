"""The benchmark's SQS: the project's local moto server, in a process of its own, counting.

Prints its endpoint and a stats URL as one JSON line, then serves until killed. The
stats URL answers the SQS calls made so far per action and the messages deleted, so
the benchmark can count API calls per message without touching the clients.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from typing import Any

from tests.local_http import LocalHTTPServer, QuietHandler
from worker.dev.local_sqs import local_sqs

COUNTED = (
    "receive_message",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility_batch",
    "get_queue_attributes",
    "get_queue_url",
    "send_message_batch",
)


class Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.deleted = 0

    def call(self, action: str, deleted: int = 0) -> None:
        with self._lock:
            self.calls[action] += 1
            self.deleted += deleted

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": dict(self.calls), "deleted": self.deleted}


def _count_calls(tally: Tally) -> None:
    """Count each API call once: moto's batch calls run its single-message ones inside."""
    from moto.sqs.models import SQSBackend

    inside = threading.local()
    for name in COUNTED:
        original = getattr(SQSBackend, name)

        def counted(
            self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any
        ) -> Any:
            if getattr(inside, "call", None) is not None:
                return _original(self, *args, **kwargs)
            inside.call = _name
            try:
                result = _original(self, *args, **kwargs)
            finally:
                inside.call = None
            deleted = {
                "delete_message": 1,
                "delete_message_batch": len(result[0]) if _name == "delete_message_batch" else 0,
            }.get(_name, 0)
            tally.call(_name, deleted)
            return result

        setattr(SQSBackend, name, counted)


def main() -> None:
    tally = Tally()

    class Stats(QuietHandler):
        def do_GET(self) -> None:
            self.send_json(tally.snapshot())

    stats = LocalHTTPServer(Stats)
    with local_sqs() as endpoint:
        _count_calls(tally)  # after local_sqs's own patches, so they are counted once
        print(json.dumps({"endpoint": endpoint, "stats": stats.url}), flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin


if __name__ == "__main__":
    main()
