"""Where each received message stands, from its receive until SQS no longer needs us.

Pure and synchronous: no I/O, no clock (callers pass `now`), no event loop. Each
method moves receipt handles between states and returns the handles the caller must
act on; the settlement parts (`intake`, `checkpointer`, `heartbeat`) make those SQS
calls and nothing else. Every state change ends in one call of `on_change`, the one
place from which whoever waits on the ledger (room to receive, a checkpoint wanted) is
woken.

    HELD ──ack──▶ DECIDED ──checkpoint──▶ CHECKPOINTING ──stored──▶ CHECKPOINTED
      │              ▲                          │                        │
      │              └─────────not stored───────┘                   DELETING ──▶ deleted
      ├──reject──▶ copied to the DLQ ──────────────────────────▶ CHECKPOINTED
      └──nack, no decision, DLQ copy failed, shutdown──▶ released (handed back to SQS)
    any state: SQS took it back (a refused extension, a lapsed timeout) ──▶ discarded

The rules, each written once below:
- a message is deleted only after a checkpoint that began after its handler acked it
  succeeded, or after its dead-letter copy was stored;
- a discarded message is never deleted (its receipt is stale) and its count is taken back
  unless a checkpoint may have stored it: then a running checkpoint decides;
- a released message's count is taken back: its redelivery is the one that counts
  (handing a message back and SQS taking it back are one transition: `discard`).
"""

from __future__ import annotations

import enum
import functools
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Concatenate, Final, Literal, ParamSpec, TypeVar

Undo = Callable[[], None]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class Decision:
    """What a handler decided about its message."""

    outcome: Literal["ack", "nack", "reject"]
    # For a reject: why, and the specifics (stored with the dead-letter copy).
    reason: str = ""
    detail: str = ""


ACK: Final = Decision("ack")  # handled: delete once its effects are stored
NACK: Final = Decision("nack")  # failed: visible again after a backoff


def rejection(reason: str, detail: str = "") -> Decision:
    """Never valid: copy it to the dead-letter queue with these, then delete it."""
    return Decision("reject", reason, detail)


class State(enum.Enum):
    HELD = "held"  # received; no decision applied yet
    DECIDED = "decided"  # acked; waiting for a checkpoint that carries its effects
    CHECKPOINTING = "checkpointing"  # carried by the checkpoint running now
    CHECKPOINTED = "checkpointed"  # its record is stored: delete it
    DELETING = "deleting"  # a delete call for it is running


@dataclass(slots=True, eq=False)
class Slot:
    """One message in the ledger: what its handler decides and how to undo its effects."""

    receipt_handle: str
    expires_at: float
    state: State = State.HELD
    decision: Decision | None = None
    # Reverses what handling recorded, while no stored checkpoint has carried it.
    undo: list[Undo] = field(default_factory=list)
    # Its handler is running: what it recorded is settled when the handler returns.
    in_handler: bool = False
    # Undo steps a running checkpoint may have stored: their fate waits for its result.
    carried: int | None = None
    # SQS has it again: never delete it.
    discarded: bool = False

    def decide(self, decision: Decision) -> None:
        """The first decision counts (FastStream may settle again after a handler did)."""
        if self.decision is None:
            self.decision = decision

    def _take_back(self) -> None:
        undo, self.undo = self.undo, []
        for step in undo:
            step()


@dataclass(frozen=True, slots=True)
class AfterBatch:
    """The batch's decisions other than ack, as handles to act on."""

    dead_letter: list[Slot]  # copy to the DLQ with their reasons, then delete
    back_off: list[str]  # released; visible again after a backoff
    release: list[str]  # released now: no handler decided


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What one checkpoint carries: acked messages to delete, and effects it may store."""

    acked: list[Slot]
    carried: list[Slot]


def _changes(
    method: Callable[Concatenate[Ledger, _P], _R],
) -> Callable[Concatenate[Ledger, _P], _R]:
    """Marks a state change: `on_change` runs once it is complete."""

    @functools.wraps(method)
    def changed(ledger: Ledger, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        result = method(ledger, *args, **kwargs)
        ledger.on_change()
        return result

    return changed


def _nothing() -> None:
    pass


class Ledger:
    def __init__(
        self,
        *,
        max_held: int,
        checkpoint_messages: int,
        on_change: Callable[[], None] = _nothing,
    ) -> None:
        self._max_held = max_held
        self._checkpoint_messages = checkpoint_messages
        self.on_change = on_change
        self._slots: dict[str, Slot] = {}
        # Acked, in the order their handlers acked them (a dict: removal is O(1)).
        self._decided: dict[str, Slot] = {}
        self._in_handler: set[Slot] = set()
        self._checkpoint: Checkpoint | None = None
        # Held slots per state: what the waiters ask, without a scan per question.
        self._in_state: Counter[State] = Counter()

    # What the driver asks

    @property
    def held(self) -> int:
        """Received and not yet deleted, released or discarded."""
        return len(self._slots)

    @property
    def room(self) -> bool:
        """Whether receiving more keeps the held messages within `max_held`."""
        return len(self._slots) < self._max_held

    @property
    def waiting(self) -> int:
        """Acked messages that wait for a checkpoint."""
        return len(self._decided)

    @property
    def deleting(self) -> int:
        """Messages whose delete call is running: a kill now would count them twice."""
        return self._in_state[State.DELETING]

    @property
    def deletable(self) -> int:
        """Messages whose record is stored and whose delete has not started."""
        return self._in_state[State.CHECKPOINTED]

    @property
    def checkpoint_wanted(self) -> bool:
        """Enough acked messages wait that a checkpoint should start now."""
        return self.waiting >= self._checkpoint_messages or (self.waiting > 0 and not self.room)

    def state(self, receipt_handle: str) -> State | None:
        """None once deleted, released or discarded (or never held): the ledger's one
        query by message, for whoever observes it from outside (its tests do)."""
        slot = self._slots.get(receipt_handle)
        return None if slot is None else slot.state

    # Receive and handle

    @_changes
    def hold(self, receipt_handles: Iterable[str], expires_at: float) -> None:
        for handle in receipt_handles:
            self._slots[handle] = Slot(handle, expires_at)
            self._in_state[State.HELD] += 1

    @_changes
    def start_handling(self, receipt_handle: str) -> Slot:
        slot = self._slots.get(receipt_handle)
        if slot is None:  # SQS took it back before its handler ran
            slot = Slot(receipt_handle, 0.0, discarded=True)
        slot.in_handler = True
        self._in_handler.add(slot)
        return slot

    @_changes
    def finish_handling(self, slot: Slot) -> None:
        """An ack waits for a checkpoint from now on, so no checkpoint can carry its count
        without also deleting it."""
        slot.in_handler = False
        self._in_handler.discard(slot)
        if slot.discarded:
            self._settle_discarded(slot)
        elif slot.decision == ACK and slot.state is State.HELD:
            self._move(slot, State.DECIDED)
            self._decided[slot.receipt_handle] = slot

    @_changes
    def after_batch(self, receipt_handles: Iterable[str]) -> AfterBatch:
        """The batch's other decisions: nacked and undecided messages are released here."""
        dead_letter: list[Slot] = []
        back_off: list[str] = []
        release: list[str] = []
        for handle in receipt_handles:
            slot = self._slots.get(handle)
            if slot is None or slot.state is not State.HELD:
                continue
            if slot.decision is None:
                release.append(handle)
            elif slot.decision.outcome == "reject":
                dead_letter.append(slot)
            elif slot.decision.outcome == "nack":
                back_off.append(handle)
        self._discard(back_off + release)
        return AfterBatch(dead_letter, back_off, release)

    @_changes
    def copies_stored(self, slots: Iterable[Slot]) -> None:
        """Their record is the DLQ copy: delete them now, so a crash cannot leave a second
        copy behind by redelivering the original."""
        for slot in slots:
            if not slot.discarded:
                self._move(slot, State.CHECKPOINTED)

    @_changes
    def copies_failed(self, slots: Iterable[Slot]) -> list[str]:
        """Released, to be retried after a backoff."""
        handles = [s.receipt_handle for s in slots if not s.discarded]
        self._discard(handles)
        return handles

    # Checkpoint

    @_changes
    def begin_checkpoint(self) -> Checkpoint:
        """Every acked message; and the export may store whatever any other message's
        handler recorded so far (one still running, or one about to be nacked), so
        those effects wait for its result too."""
        if self._checkpoint is not None:
            raise RuntimeError("a checkpoint is already running")
        acked = list(self._decided.values())
        self._decided = {}
        for slot in acked:
            self._move(slot, State.CHECKPOINTING)
        others = {s for s in self._slots.values() if s.state is State.HELD and s.undo}
        carried = acked + list(others | self._in_handler)
        for slot in carried:
            slot.carried = len(slot.undo)
        self._checkpoint = Checkpoint(acked, carried)
        return self._checkpoint

    @_changes
    def end_checkpoint(self, checkpoint: Checkpoint, *, stored: bool) -> None:
        """Stored: what it carried can no longer be taken back, and its acks are deleted.
        Not stored: the acks wait for the next one."""
        if checkpoint is not self._checkpoint:
            raise RuntimeError("not the running checkpoint")
        self._checkpoint = None
        for slot in checkpoint.carried:
            steps, slot.carried = slot.carried or 0, None
            if stored:
                del slot.undo[:steps]
            if slot.discarded and not slot.in_handler:
                slot._take_back()  # what the checkpoint did not store
        retry: dict[str, Slot] = {}
        for slot in checkpoint.acked:
            if slot.discarded:
                continue
            if stored:
                self._move(slot, State.CHECKPOINTED)
            else:
                self._move(slot, State.DECIDED)
                retry[slot.receipt_handle] = slot
        self._decided = retry | self._decided

    # Delete

    @_changes
    def begin_deletes(self) -> list[str]:
        """Every stored message not yet being deleted: ours alone, so never deleted twice."""
        handles = [h for h, s in self._slots.items() if s.state is State.CHECKPOINTED]
        for handle in handles:
            self._move(self._slots[handle], State.DELETING)
        return handles

    @_changes
    def end_deletes(self, receipt_handles: Iterable[str], *, answered: bool) -> None:
        """`answered`: SQS replied (what it refused comes back and is counted then, as
        any redelivery would be); otherwise the call failed and they wait for the next try."""
        for handle in receipt_handles:
            slot = self._slots.get(handle)
            if slot is None or slot.state is not State.DELETING:
                continue
            if answered:
                self._in_state[State.DELETING] -= 1
                del self._slots[handle]
            else:
                self._move(slot, State.CHECKPOINTED)

    # Visibility

    @_changes
    def due_for_extension(self, now: float, horizon: float) -> tuple[list[str], list[str]]:
        """(lapsed, expiring): lapsed messages are visible again, so another receive may
        have them: they are SQS's again, as if an extension had been refused."""
        lapsed = [h for h, s in self._slots.items() if s.expires_at <= now]
        self._discard(lapsed)
        expiring = [h for h, s in self._slots.items() if s.expires_at <= horizon]
        return lapsed, expiring

    @_changes
    def extended(
        self,
        receipt_handles: Iterable[str],
        refused: Collection[str],
        expires_at: float,
        *,
        failed: Collection[str] = (),
    ) -> int:
        """A refused extension means a stale receipt (or SQS's 12 h cap): discarded. One
        SQS `failed` by its own fault is still held, on its old timeout, so the next tick
        tries it again. How many were still held of the refused: one deleted while its
        extension was on its way is refused too, but SQS does not have it back."""
        taken_back = self._discard(h for h in receipt_handles if h in refused)
        for handle in receipt_handles:
            slot = self._slots.get(handle)
            if slot is not None and handle not in failed:
                slot.expires_at = expires_at
        return taken_back

    @_changes
    def discard(self, receipt_handles: Iterable[str]) -> None:
        """SQS has these again (it took them back, or we hand them back): forget them,
        never delete them, and take back their effects unless a running checkpoint may
        store them (its result decides) or their handler still runs (its end does)."""
        self._discard(receipt_handles)

    def _discard(self, receipt_handles: Iterable[str]) -> int:
        discarded = 0
        for handle in list(receipt_handles):
            slot = self._slots.pop(handle, None)
            if slot is None:
                continue
            discarded += 1
            self._in_state[slot.state] -= 1
            slot.discarded = True
            self._decided.pop(handle, None)
            self._settle_discarded(slot)
        return discarded

    # Shutdown

    @_changes
    def hand_back_all(self) -> list[str]:
        """Shutting down: everything not stored is released (its effects taken back); what
        was stored stays, for a last delete."""
        stored = (State.CHECKPOINTED, State.DELETING)
        stranded = [h for h, s in self._slots.items() if s.state not in stored]
        self._discard(stranded)
        return stranded

    def _move(self, slot: Slot, state: State) -> None:
        self._in_state[slot.state] -= 1
        slot.state = state
        self._in_state[state] += 1

    def _settle_discarded(self, slot: Slot) -> None:
        if not slot.in_handler and slot.carried is None:
            slot._take_back()
