"""A local SQS endpoint: moto's server on 127.0.0.1, made to behave like SQS under load.

The demo runs on it, and so do the tests and benchmarks, so they all see the same
emulator. moto is an optional dependency (the `demo` extra).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class DemoUnavailable(Exception):
    pass


# One lock for every change to moto's queues (reentrant: batch calls run single ones).
_state_lock = threading.RLock()
# moto's calls that read and rewrite a queue's message list.
_MUTATING = (
    "send_message",
    "send_message_batch",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
)


def _patch_moto() -> None:
    """Three fixes to moto's SQS backend, for as long as this process runs.

    Atomic changes: moto's threaded server changes a queue's message list without a
    lock. Two concurrent receives can return the same message, and two concurrent
    deletes each rebuild the list from the same old copy, so the later one brings back
    what the earlier one deleted. Real SQS does neither. Every change runs under one
    lock here; a long poll waits outside it, so an empty queue's poll holds up no one.

    Cheap retention checks: moto checks each received message's retention period by
    computing all the queue's attributes, counting every message each time, so one
    receive costs ~1 s at a depth of 1,600. Reading the one attribute is enough.
    """
    from moto.sqs.models import SQSBackend

    receive = SQSBackend.receive_message
    if getattr(receive, "_nps_atomic", False):
        return

    @functools.wraps(receive)
    def atomic_receive(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with _state_lock:
                picked = receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            left = deadline - time.monotonic()
            if picked or left <= 0:
                return picked
            self.get_queue(queue_name).wait_for_messages(min(left, 0.5))

    def atomic(method: Any) -> Any:
        @functools.wraps(method)
        def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
            with _state_lock:
                return method(self, *args, **kwargs)

        return locked

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > time.time())

    atomic_receive._nps_atomic = True  # type: ignore[attr-defined]
    SQSBackend.receive_message = atomic_receive  # type: ignore[method-assign]
    for name in _MUTATING:
        setattr(SQSBackend, name, atomic(getattr(SQSBackend, name)))
    SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]


@contextmanager
def local_sqs() -> Iterator[str]:
    """moto's SQS server on 127.0.0.1 and a free port; yields its URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise DemoUnavailable(
            "the demo needs moto's server: install with `pip install 'nps-worker[demo]'`"
        ) from None
    _patch_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
