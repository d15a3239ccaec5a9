"""A local SQS endpoint: moto's server on 127.0.0.1, made to behave like SQS under load.

The demo runs on it, and so do the tests and benchmarks, so they all see the same
emulator. moto is an optional dependency (the `demo` extra).
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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

    Attributes computed when read: moto computes every attribute of a queue (three of
    them scan all its messages) each time it reads one, and every send reads one, so
    sends slowed down as a queue grew (a send of 10 took 90 ms at a DLQ depth of
    20,000). `_LazyAttributes` computes only the one asked for, and the clock each
    message's visibility check reads is `time.time()` instead of datetime arithmetic.
    """
    import moto.sqs.models
    from moto.sqs.models import Queue, SQSBackend

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
    moto.sqs.models.unix_time_millis = _epoch_millis  # type: ignore[attr-defined]
    every_attribute = Queue.attributes.fget  # type: ignore[attr-defined]
    Queue.attributes = property(lambda queue: _LazyAttributes(queue, every_attribute))  # type: ignore[method-assign,assignment]


class _LazyAttributes(Mapping[str, Any]):
    """A moto queue's attributes as moto would compute them, one at a time when read."""

    def __init__(self, queue: Any, every_attribute: Callable[[Any], dict[str, Any]]) -> None:
        self._queue = queue
        self._every_attribute = every_attribute

    def __contains__(self, name: object) -> bool:
        queue = self._queue
        return (
            name in queue.BASE_ATTRIBUTES
            or (queue.fifo_queue and name in queue.FIFO_ATTRIBUTES)
            or (bool(queue.kms_master_key_id) and name in queue.KMS_ATTRIBUTES)
            or (name == "Policy" and bool(queue.policy))
            or (name == "RedrivePolicy" and bool(queue.redrive_policy))
        )

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        from moto.core.utils import camelcase_to_underscores

        if name == "Policy":
            return self._queue.policy
        if name == "RedrivePolicy":
            return json.dumps(self._queue.redrive_policy)
        value = getattr(self._queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._every_attribute(self._queue))

    def __len__(self) -> int:
        return len(self._every_attribute(self._queue))


def _epoch_millis(dt: Any = None) -> float:
    if dt is not None:  # moto's own arithmetic for a given time
        from moto.core.utils import unix_time_millis

        return float(unix_time_millis(dt))
    return time.time() * 1000.0


def _require_moto() -> None:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise DemoUnavailable(
            "the demo needs moto's server: install with `pip install 'nps-worker[demo]'`"
        ) from None


@contextmanager
def local_sqs() -> Iterator[str]:
    """moto's SQS server on 127.0.0.1 and a free port, in this process; yields its URL."""
    _require_moto()
    from moto.server import ThreadedMotoServer

    _patch_moto()
    # werkzeug logs every request at INFO through a handler of its own when nothing else
    # configured its logger: in this process that is a line per SQS call on stderr.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass(frozen=True)
class LocalSQSProcess:
    endpoint: str
    pid: int


@contextmanager
def local_sqs_process() -> Iterator[LocalSQSProcess]:
    """`local_sqs` in a process of its own, so it does not share an interpreter (and its
    lock) with the worker. It serves until this block ends (it watches its stdin)."""
    _require_moto()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.dev.local_sqs"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    endpoint = process.stdout.readline().strip()
    if not endpoint:
        process.kill()
        raise DemoUnavailable("the local SQS server did not start")
    try:
        yield LocalSQSProcess(endpoint, process.pid)
    finally:
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _serve_until_stdin_closes() -> None:
    with local_sqs() as endpoint:
        print(endpoint, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    _serve_until_stdin_closes()
