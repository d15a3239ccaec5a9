"""What the adapter reports, for whoever keeps the metrics: its one telemetry seam."""

from __future__ import annotations

from typing import Protocol

from .client import QueueDepth


class SQSObserver(Protocol):
    def received(self, queue: str, count: int) -> None: ...

    def processed(self, queue: str, seconds: float) -> None: ...

    def dead_lettered(self, reason: str) -> None:
        """One message copied to the dead-letter queue (its copy is stored)."""

    def queue_depth(self, queue: str, depth: QueueDepth) -> None: ...


class NoObserver:
    def received(self, queue: str, count: int) -> None:
        pass

    def processed(self, queue: str, seconds: float) -> None:
        pass

    def dead_lettered(self, reason: str) -> None:
        pass

    def queue_depth(self, queue: str, depth: QueueDepth) -> None:
        pass
