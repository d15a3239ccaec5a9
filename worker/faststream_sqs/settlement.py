"""Settlement: everything between receiving a message and SQS no longer needing us.

Three parts over the one `Ledger`, split along their clocks:

- `Intake` (the poll loops' pace): room to receive, a batch held while its handler
  runs, the decisions other than ack applied (dead letters, backoffs, hand-backs);
- `Checkpointer` (the checkpoint clock): store what handlers recorded, then delete;
- `Heartbeat` (the visibility clock): keep held messages hidden.

`Settlement` is the async context manager that owns them: it starts and supervises
the two background loops and, on exit, stops them in order (see `__aexit__`).
"""

from __future__ import annotations

import logging
from types import TracebackType

from .checkpointer import Checkpointer
from .client import SQSClient, VisibilityChange
from .dead_letters import DeadLetterQueue
from .heartbeat import Heartbeat
from .intake import Intake
from .ledger import Ledger
from .observer import SQSObserver
from .options import SettleOptions
from .parts import Shared
from .tasks import Supervisor
from .verdict import StoreEffects
from .watch import Watch


class Settlement:
    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        dead_letters: DeadLetterQueue | None,
        store_effects: StoreEffects,
        observer: SQSObserver,
        options: SettleOptions,
        log: logging.Logger,
    ) -> None:
        self._log = log
        self._watch = Watch()
        self.ledger = Ledger(
            max_held=options.max_held,
            checkpoint_messages=options.checkpoint_messages,
            on_change=self._watch.notify,
        )
        shared = Shared(self.ledger, self._watch, client, queue_url, options, log)
        self.intake = Intake(shared, dead_letters=dead_letters, observer=observer)
        self.checkpointer = Checkpointer(shared, store_effects=store_effects)
        self.heartbeat = Heartbeat(shared)
        self._tasks = Supervisor(log)

    async def __aenter__(self) -> Settlement:
        self._tasks.start("heartbeat", self.heartbeat.run)
        self._tasks.start("checkpointer", self.checkpointer.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Once the poll loops have stopped: the last checkpoint (a running one first
        ends) and its deletes while the heartbeat still keeps messages hidden; what was
        not stored goes back to the queue; then the heartbeat stops."""
        self.checkpointer.stop()
        await self._tasks.join("checkpointer")
        await self.checkpointer.checkpoint()
        await self.checkpointer.delete_stored()  # one more try: these are counted already
        stranded = self.ledger.hand_back_all()
        if stranded:
            self._log.warning(
                "handing back %d message(s) whose counts were not exported", len(stranded)
            )
            await self.intake.change_visibility([VisibilityChange(h, 0) for h in stranded])
        self.heartbeat.stop()
        await self._tasks.join("heartbeat")
        self.intake.close()
        self.checkpointer.close()
        if self.ledger.held:
            self._log.warning(
                "%d counted message(s) could not be deleted; if they reappear they are "
                "counted again",
                self.ledger.held,
            )
