"""The kata's traffic: one scenario is 27 messages, valid, late and malformed.

Pure: the caller passes the clock and the random source, so tests can replay it.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
SCENARIO_SIZE: Final = 27
# (type, weight): pageview three times as often as purchase, added-to-basket twice.
EVENT_TYPES: Final = (("pageview", 3), ("added-to-basket", 2), ("purchase", 1))
FIELDS: Final = ("type", "value", "occurred_at")


@dataclass(frozen=True, slots=True)
class KataMessage:
    body: str
    # For valid messages, what the worker must count; None for malformed ones.
    type: str | None = None
    value: float = 0.0

    @property
    def valid(self) -> bool:
        return self.type is not None


def _event(rng: random.Random, occurred_at: datetime) -> dict[str, object]:
    names = [name for name, _ in EVENT_TYPES]
    weights = [weight for _, weight in EVENT_TYPES]
    event_type = rng.choices(names, weights)[0]
    value: float
    if event_type == "pageview":
        value = 1
    elif event_type == "added-to-basket":
        value = rng.randint(1, 5)
    else:
        value = round(rng.uniform(0, 100), 2)
    return {"type": event_type, "value": value, "occurred_at": occurred_at.strftime(TIME_FORMAT)}


def _valid(event: dict[str, object]) -> KataMessage:
    return KataMessage(json.dumps(event), str(event["type"]), float(event["value"]))  # type: ignore[arg-type]


def scenario(now: datetime, rng: random.Random) -> list[KataMessage]:
    """16 current events, 4 an hour late, 4 missing a key, 3 with a field garbled."""
    messages = [_valid(_event(rng, now)) for _ in range(16)]
    messages += [_valid(_event(rng, now - timedelta(hours=1))) for _ in range(4)]
    for _ in range(4):
        event = _event(rng, now)
        del event[rng.choice(FIELDS)]
        messages.append(KataMessage(json.dumps(event)))
    for _ in range(3):
        event = _event(rng, now)
        event[rng.choice(("value", "occurred_at"))] = "".join(
            rng.choices(string.ascii_letters, k=5)
        )
        messages.append(KataMessage(json.dumps(event)))
    rng.shuffle(messages)
    return messages


def scenarios(count: int, now: datetime, rng: random.Random) -> list[KataMessage]:
    return [message for _ in range(count) for message in scenario(now, rng)]
