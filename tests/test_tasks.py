"""The adapter's background machinery on its own: supervised loops, the ledger's one
condition, the one backoff rule, and the settlement's start and stop order."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time

import pytest

from worker.faststream_sqs.backoff import Backoff
from worker.faststream_sqs.ledger import Ledger
from worker.faststream_sqs.tasks import Supervisor
from worker.faststream_sqs.watch import Watch


def test_a_loop_that_dies_is_logged_and_restarted_after_a_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise RuntimeError("boom")

    async def scenario() -> None:
        tasks = Supervisor(logging.getLogger("test.tasks"), Backoff(0.05, 0.05, jitter="none"))
        tasks.start("flaky loop", flaky)
        await tasks.join(timeout=5)

    with caplog.at_level(logging.ERROR, "test.tasks"):
        asyncio.run(scenario())
    assert len(runs) == 3, "restarted until it returned"
    assert all(later - earlier >= 0.04 for earlier, later in itertools.pairwise(runs))
    failures = [r for r in caplog.records if "flaky loop failed" in r.getMessage()]
    assert len(failures) == 2
    assert [bool(r.exc_info) for r in failures] == [True, False], "one traceback"


def test_join_cancels_a_loop_that_does_not_return_in_time() -> None:
    async def scenario() -> bool:
        tasks = Supervisor(logging.getLogger("test.tasks"))
        cancelled = asyncio.Event()

        async def stuck() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        tasks.start("stuck", stuck)
        await asyncio.sleep(0)
        await tasks.join(timeout=0.05)
        return cancelled.is_set()

    assert asyncio.run(scenario())


def test_a_loop_name_runs_once() -> None:
    async def scenario() -> None:
        tasks = Supervisor(logging.getLogger("test.tasks"))

        async def forever() -> None:
            await asyncio.Event().wait()

        tasks.start("one", forever)
        with pytest.raises(RuntimeError, match="already running"):
            tasks.start("one", forever)
        await tasks.join(timeout=0)

    asyncio.run(scenario())


def test_every_ledger_change_wakes_whoever_waits_on_the_ledger() -> None:
    async def scenario() -> tuple[bool, bool]:
        watch = Watch()
        ledger = Ledger(max_held=1, checkpoint_messages=1, on_change=watch.notify)
        ledger.hold(["a"], expires_at=30)
        waiting = asyncio.create_task(watch.wait_until(lambda: ledger.room, timeout=5))
        timed_out = await watch.wait_until(lambda: ledger.room, timeout=0.01)
        ledger.discard(["a"])  # room again: the waiter wakes without a flag of its own
        return timed_out, await waiting

    assert asyncio.run(scenario()) == (False, True)


def test_every_retry_delay_grows_to_its_cap_and_jitters_as_asked() -> None:
    rng = random.Random(7)
    none = Backoff(base=1, cap=10, jitter="none")
    assert [none.delay(n) for n in (1, 2, 3, 4, 5, 100_000)] == [1, 2, 4, 8, 10, 10]
    half = Backoff(base=2, cap=900, jitter="half")
    assert all(450 <= half.delay(40, rng) <= 900 for _ in range(100))
    full = Backoff(base=1, cap=30)
    draws = [full.delay(10, rng) for _ in range(200)]
    assert min(draws) < 5
    assert max(draws) <= 30
