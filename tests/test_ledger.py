"""The settlement ledger on its own: no SQS, no event loop, milliseconds per test."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from worker.faststream_sqs.ledger import (
    ACK,
    NACK,
    Checkpoint,
    Decision,
    Ledger,
    Slot,
    State,
    rejection,
)


def _ledger(max_held: int = 100, checkpoint_messages: int = 50) -> Ledger:
    return Ledger(max_held=max_held, checkpoint_messages=checkpoint_messages)


def _handled(ledger: Ledger, handle: str, decision: Decision | None = ACK) -> Slot:
    slot = ledger.start_handling(handle)
    if decision is not None:
        slot.decide(decision)
    ledger.finish_handling(slot)
    return slot


def _recorded(ledger: Ledger, handle: str, decision: Decision, taken_back: list[str]) -> None:
    """A handler that recorded an effect (taking it back appends to `taken_back`), then
    decided."""
    slot = ledger.start_handling(handle)
    slot.undo.append(lambda: taken_back.append(handle))
    slot.decide(decision)
    ledger.finish_handling(slot)


def test_an_ack_is_deleted_only_after_a_stored_checkpoint_that_began_after_it() -> None:
    ledger = _ledger()
    ledger.hold(["a", "b"], expires_at=30)
    _handled(ledger, "a")
    assert ledger.begin_deletes() == []
    checkpoint = ledger.begin_checkpoint()
    _handled(ledger, "b")  # acked while the export runs: not carried by it
    ledger.end_checkpoint(checkpoint, stored=True)
    assert ledger.begin_deletes() == ["a"]
    assert ledger.state("b") is State.DECIDED


def test_a_checkpoint_not_stored_leaves_its_acks_for_the_next_one() -> None:
    ledger = _ledger()
    ledger.hold(["a"], expires_at=30)
    _handled(ledger, "a")
    ledger.end_checkpoint(ledger.begin_checkpoint(), stored=False)
    assert ledger.begin_deletes() == []
    assert ledger.waiting == 1
    ledger.end_checkpoint(ledger.begin_checkpoint(), stored=True)
    assert ledger.begin_deletes() == ["a"]


def test_a_failed_delete_call_is_retried_and_an_answered_one_forgets() -> None:
    ledger = _ledger()
    ledger.hold(["a"], expires_at=30)
    _handled(ledger, "a")
    ledger.end_checkpoint(ledger.begin_checkpoint(), stored=True)
    ledger.end_deletes(ledger.begin_deletes(), answered=False)
    batch = ledger.begin_deletes()
    assert batch == ["a"]
    assert ledger.begin_deletes() == [], "one delete call at a time per message"
    ledger.end_deletes(batch, answered=True)
    assert (ledger.held, ledger.state("a")) == (0, None)


def test_the_batch_decisions_other_than_ack_are_sorted_and_released() -> None:
    ledger = _ledger()
    ledger.hold(["ack", "nack", "reject", "none"], expires_at=30)
    _handled(ledger, "ack")
    _handled(ledger, "nack", NACK)
    _handled(ledger, "reject", rejection("malformed_json", "line 1"))
    _handled(ledger, "none", None)
    after = ledger.after_batch(["ack", "nack", "reject", "none"])
    assert [s.receipt_handle for s in after.dead_letter] == ["reject"]
    assert after.dead_letter[0].decision == Decision("reject", "malformed_json", "line 1")
    assert (after.back_off, after.release) == (["nack"], ["none"])
    assert ledger.held == 2  # the ack waits for a checkpoint; the reject for its copy
    ledger.copies_stored(after.dead_letter)
    assert ledger.begin_deletes() == ["reject"]


def test_a_failed_dead_letter_copy_releases_the_message_for_a_retry() -> None:
    ledger = _ledger()
    ledger.hold(["r"], expires_at=30)
    _handled(ledger, "r", rejection("not_an_object"))
    after = ledger.after_batch(["r"])
    assert ledger.copies_failed(after.dead_letter) == ["r"]
    assert ledger.held == 0


def test_the_first_decision_counts() -> None:
    slot = Slot("a", 30)
    slot.decide(rejection("invalid_field"))
    slot.decide(ACK)
    assert slot.decision == rejection("invalid_field")


def test_a_refused_extension_discards_and_takes_back_an_uncheckpointed_count() -> None:
    ledger = _ledger()
    ledger.hold(["a", "b"], expires_at=10)
    taken_back: list[str] = []
    for handle in ("a", "b"):
        _recorded(ledger, handle, ACK, taken_back)
    lapsed, expiring = ledger.due_for_extension(now=5, horizon=20)
    assert (lapsed, expiring) == ([], ["a", "b"])
    assert ledger.extended(expiring, refused={"a"}, expires_at=40) == 1
    assert taken_back == ["a"]
    assert (ledger.state("a"), ledger.state("b")) == (None, State.DECIDED)
    ledger.end_checkpoint(ledger.begin_checkpoint(), stored=True)
    assert ledger.begin_deletes() == ["b"]


def test_an_extension_refused_because_the_message_was_deleted_meanwhile_is_no_take_back() -> None:
    ledger = _ledger()
    ledger.hold(["a"], expires_at=10)
    _handled(ledger, "a")
    ledger.end_checkpoint(ledger.begin_checkpoint(), stored=True)
    deleting = ledger.begin_deletes()
    _, expiring = ledger.due_for_extension(now=5, horizon=20)
    assert expiring == ["a"], "a message being deleted is still extended: the delete may fail"
    ledger.end_deletes(deleting, answered=True)
    assert ledger.extended(expiring, refused={"a"}, expires_at=40) == 0


def test_a_lapsed_message_is_discarded_without_asking_sqs() -> None:
    ledger = _ledger()
    ledger.hold(["old"], expires_at=10)
    ledger.hold(["new"], expires_at=100)
    assert ledger.due_for_extension(now=11, horizon=20) == (["old"], [])
    assert ledger.held == 1


@pytest.mark.parametrize("stored", [True, False])
def test_a_discard_during_a_checkpoint_waits_for_its_result(stored: bool) -> None:
    ledger = _ledger()
    ledger.hold(["a"], expires_at=30)
    taken_back: list[str] = []
    _recorded(ledger, "a", ACK, taken_back)
    checkpoint = ledger.begin_checkpoint()
    ledger.discard(["a"])
    assert taken_back == [], "the export running now may store it"
    ledger.end_checkpoint(checkpoint, stored=stored)
    assert taken_back == ([] if stored else ["a"])
    assert ledger.begin_deletes() == [], "a stale receipt is never deleted"


def test_a_count_recorded_before_a_nack_waits_for_a_running_checkpoint() -> None:
    ledger = _ledger()
    ledger.hold(["a"], expires_at=30)
    taken_back: list[str] = []
    _recorded(ledger, "a", NACK, taken_back)
    checkpoint = ledger.begin_checkpoint()  # its snapshot includes that count
    assert ledger.after_batch(["a"]).back_off == ["a"]
    ledger.end_checkpoint(checkpoint, stored=True)
    assert taken_back == [], "stored counts are never taken back"


def test_shutdown_hands_back_what_was_not_stored_and_keeps_what_was() -> None:
    ledger = _ledger()
    ledger.hold(["stored", "waiting", "unhandled"], expires_at=30)
    _handled(ledger, "stored")
    ledger.end_checkpoint(ledger.begin_checkpoint(), stored=True)
    _handled(ledger, "waiting")
    assert sorted(ledger.hand_back_all()) == ["unhandled", "waiting"]
    assert ledger.begin_deletes() == ["stored"]


def test_room_and_checkpoint_wanted_follow_the_limits() -> None:
    ledger = _ledger(max_held=3, checkpoint_messages=2)
    ledger.hold(["a", "b"], expires_at=30)
    assert ledger.room
    _handled(ledger, "a")
    assert not ledger.checkpoint_wanted
    ledger.hold(["c"], expires_at=30)
    assert not ledger.room
    assert ledger.checkpoint_wanted, "full: the one acked message is what frees room"
    _handled(ledger, "b")
    assert ledger.waiting == 2


def test_a_second_checkpoint_cannot_start_while_one_runs() -> None:
    ledger = _ledger()
    running = ledger.begin_checkpoint()
    with pytest.raises(RuntimeError):
        ledger.begin_checkpoint()
    with pytest.raises(RuntimeError):
        ledger.end_checkpoint(Checkpoint([], []), stored=True)
    ledger.end_checkpoint(running, stored=True)


# Every interleaving: receive, handle, decide, heartbeat refusals and lapses, checkpoints
# that store or fail, delete calls answered or not, and shutdown.


class LedgerMachine(RuleBasedStateMachine):
    received = Bundle("received")
    running = Bundle("running")
    finished = Bundle("finished")

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(max_held=8, checkpoint_messages=3)
        self.next_id = 0
        self.count = 0
        self.counted: set[str] = set()
        self.undone: set[str] = set()
        self.stored: set[str] = set()  # in a checkpoint's snapshot that was stored
        self.acked: set[str] = set()
        self.acked_before_stored: set[str] = set()
        self.dead_lettered: set[str] = set()
        self.gone: set[str] = set()  # released or discarded
        self.deleted: set[str] = set()
        self.deleting: list[str] = []
        self.checkpoint: Checkpoint | None = None
        self.snapshot: set[str] = set()
        self.acked_at_begin: set[str] = set()
        self.handling: dict[str, Slot] = {}

    def _undo(self, handle: str) -> None:
        self.count -= 1
        self.undone.add(handle)

    @rule(target=received, n=st.integers(1, 3))
    def receive(self, n: int) -> object:
        handles = [f"r{self.next_id + i}" for i in range(n)]
        self.next_id += n
        self.ledger.hold(handles, expires_at=100)
        return multiple(*handles)

    @rule(target=running, handle=consumes(received), record=st.booleans())
    def start_handler(self, handle: str, record: bool) -> str:
        slot = self.ledger.start_handling(handle)
        if record:
            self.count += 1
            self.counted.add(handle)
            slot.undo.append(lambda: self._undo(handle))
        self.handling[handle] = slot
        return handle

    @rule(
        target=finished,
        handle=consumes(running),
        decision=st.sampled_from([ACK, NACK, rejection("invalid_field"), None]),
    )
    def finish_handler(self, handle: str, decision: Decision | None) -> str:
        slot = self.handling.pop(handle)
        if decision is not None:
            slot.decide(decision)
            if decision == ACK and handle not in self.gone:
                self.acked.add(handle)
        self.ledger.finish_handling(slot)
        return handle

    @rule(handle=consumes(finished), copy_stored=st.booleans())
    def settle_batch(self, handle: str, copy_stored: bool) -> None:
        after = self.ledger.after_batch([handle])
        self.gone.update(after.back_off + after.release)
        if after.dead_letter:
            if copy_stored:
                self.ledger.copies_stored(after.dead_letter)
                self.dead_lettered.add(handle)
            else:
                self.gone.update(self.ledger.copies_failed(after.dead_letter))

    @rule(data=st.data())
    def sqs_takes_one_back(self, data: st.DataObject) -> None:
        live = sorted(f"r{i}" for i in range(self.next_id) if self.ledger.state(f"r{i}"))
        if live:
            handle = data.draw(st.sampled_from(live))
            self.ledger.extended([handle], refused={handle}, expires_at=200)
            self.gone.add(handle)

    @precondition(lambda self: self.checkpoint is None)
    @rule()
    def begin_checkpoint(self) -> None:
        self.checkpoint = self.ledger.begin_checkpoint()
        self.snapshot = self.counted - self.undone  # what the export reads
        self.acked_at_begin = {s.receipt_handle for s in self.checkpoint.acked}

    @precondition(lambda self: self.checkpoint is not None)
    @rule(stored=st.booleans())
    def end_checkpoint(self, stored: bool) -> None:
        assert self.checkpoint is not None
        self.ledger.end_checkpoint(self.checkpoint, stored=stored)
        if stored:
            self.stored |= self.snapshot
            self.acked_before_stored |= self.acked_at_begin
        self.checkpoint = None

    @rule()
    def begin_deletes(self) -> None:
        batch = self.ledger.begin_deletes()
        for handle in batch:
            assert handle not in self.gone, f"{handle}: SQS took it back; its receipt is stale"
            assert handle not in self.deleted
            assert handle not in self.deleting
            assert handle in self.acked_before_stored or handle in self.dead_lettered, (
                f"{handle} deleted before a stored checkpoint or DLQ copy covered it"
            )
        self.deleting += batch

    @precondition(lambda self: bool(self.deleting))
    @rule(answered=st.booleans())
    def end_deletes(self, answered: bool) -> None:
        batch, self.deleting = self.deleting, []
        self.ledger.end_deletes(batch, answered=answered)
        if answered:
            self.deleted.update(batch)

    @precondition(lambda self: self.checkpoint is None and not self.handling)
    @rule()
    def shutdown(self) -> None:
        self.gone.update(self.ledger.hand_back_all())

    @invariant()
    def nothing_stored_is_taken_back(self) -> None:
        assert not (self.stored & self.undone), "a stored count went down"

    @invariant()
    def nothing_counted_is_handed_back(self) -> None:
        if self.checkpoint is not None:
            return  # its result decides for what it may store
        settled = self.gone - set(self.handling)
        assert settled & self.counted - self.stored <= self.undone, (
            "handed back with its count still recorded: the redelivery counts it again"
        )

    @invariant()
    def what_waiters_ask_matches_a_recount(self) -> None:
        live = [self.ledger.state(f"r{i}") for i in range(self.next_id)]
        assert self.ledger.deleting == live.count(State.DELETING)
        assert self.ledger.deletable == live.count(State.CHECKPOINTED)

    @invariant()
    def counts_add_up(self) -> None:
        assert self.count == len(self.counted - self.undone)


LedgerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_every_interleaving_keeps_the_ledger_invariants = LedgerMachine.TestCase
