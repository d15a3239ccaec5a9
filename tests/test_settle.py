from __future__ import annotations

import random

from worker.faststream_sqs.settle import BACKOFF_CAP_SECONDS, backoff_seconds
from worker.faststream_sqs.subscriber import POLL_BACKOFF_CAP_SECONDS, poll_backoff


def test_failed_messages_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    rng = random.Random(1)
    for receive_count in range(1, 20):
        ceiling = min(BACKOFF_CAP_SECONDS, 2 * 2 ** (receive_count - 1))
        samples = {backoff_seconds(receive_count, rng) for _ in range(50)}
        assert all(ceiling / 2 - 1 <= s <= ceiling for s in samples), (receive_count, samples)
    assert len({backoff_seconds(6, rng) for _ in range(50)}) > 1  # jittered, not lockstep


def test_a_failing_poll_loop_waits_longer_each_time_but_never_more_than_the_cap() -> None:
    assert max(poll_backoff(1) for _ in range(200)) <= 1.0
    assert max(poll_backoff(50) for _ in range(200)) <= POLL_BACKOFF_CAP_SECONDS
    assert max(poll_backoff(50) for _ in range(200)) > 1.0
