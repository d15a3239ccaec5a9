"""boto3's "standard" retry mode, as rules: which failed attempt is tried again, after
how long, and the retry quota that stops retries when most calls fail.

botocore applies these to the calls it makes; the awscrt transport (`crt`) applies the
same to its own, so a call is retried alike whichever transport makes it. The codes and
numbers are those of the AWS SDKs' standard mode (botocore's `retries/standard.py` and
`retries/quota.py` hold the originals; they are internal to botocore, hence this copy).
"""

from __future__ import annotations

import random
import threading
from typing import Final

TRANSIENT_STATUSES: Final = frozenset({500, 502, 503, 504})
TRANSIENT_CODES: Final = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
THROTTLING_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
MAX_BACKOFF_SECONDS: Final = 20.0
QUOTA_CAPACITY: Final = 500
RETRY_COST: Final = 5
TIMEOUT_RETRY_COST: Final = 10
NO_RETRY_REFUND: Final = 1


def retryable_answer(status: int, code: str | None) -> bool:
    """An error answer worth another attempt: transient or throttled."""
    return status in TRANSIENT_STATUSES or code in TRANSIENT_CODES or code in THROTTLING_CODES


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before the attempt after `attempt` (1-based): full jitter up to 2^(n-1)."""
    draw = (rng or random).random()
    return draw * min(2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)


class RetryQuota:
    """Each retry spends capacity, each first-time success earns a little back, and a
    success after retries returns what they spent: when most calls fail, retries stop."""

    def __init__(self, capacity: int = QUOTA_CAPACITY) -> None:
        self._max = capacity
        self._available = capacity
        self._lock = threading.Lock()

    @property
    def available(self) -> int:
        return self._available

    def acquire(self, amount: int) -> bool:
        with self._lock:
            if amount > self._available:
                return False
            self._available -= amount
            return True

    def release(self, amount: int) -> None:
        if self._available == self._max:
            return
        with self._lock:
            self._available = min(self._max, self._available + amount)
