"""The event contract: turn one message body into an `Event` or a `Rejection`.

Pure: no I/O, no clock, no logging. `parse_event` never raises, so the caller can
treat every outcome as data.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

RejectReason = Literal["malformed_json", "not_an_object", "missing_field", "invalid_field"]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)
MAX_DETAIL_CHARS: Final = 256
MAX_TYPE_CHARS: Final = 64
# Far above any price, and low enough that a per-type sum stays finite and, below
# 2**53 cents (about 9e13), exact to the cent; 1e308 twice would overflow to inf.
MAX_EVENT_VALUE: Final = 1_000_000_000
# The label for types beyond MAX_EVENT_TYPES: no event may claim it.
OTHER_TYPE: Final = "_other"

_TIME_PROBLEM: Final = "must be 'YYYY-MM-DD HH:MM:SS' or an ISO 8601 date and time"


def _parse_occurred_at(raw: object) -> datetime:
    if isinstance(raw, datetime):  # built in code, not from JSON
        return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    # A bare date parses as ISO 8601 too, but an event needs its time of day.
    if len(raw) <= len("YYYY-MM-DD"):
        raise ValueError(_TIME_PROBLEM)
    try:
        # Python 3.11's ISO 8601 parser also takes the kata's "YYYY-MM-DD HH:MM:SS",
        # at a third of strptime's cost.
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(_TIME_PROBLEM) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _json_number(raw: object) -> float | int:
    # bool is an int in Python, and pydantic's float allows inf and nan: the contract
    # wants neither, and a precise message for each.
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"must be a JSON number, got {_json_kind(raw)}")
    # Compared before any float conversion: a JSON integer of 400 digits is valid JSON,
    # and float() of it raises OverflowError.
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ValueError("must be finite")
    if raw > MAX_EVENT_VALUE:
        raise ValueError(f"must be at most {MAX_EVENT_VALUE:,}")
    return raw


def _label_safe(raw: str) -> str:
    # A type becomes a metric label value: blank or control characters make series that
    # no dashboard can show or select, and the overflow bucket's name is taken.
    if not raw.strip():
        raise ValueError("must not be blank")
    # Control (Cc) and format (Cf) characters are never printable: for a printable type,
    # the usual case, one C call settles it instead of a lookup per character.
    if not raw.isprintable() and any(unicodedata.category(char) in ("Cc", "Cf") for char in raw):
        raise ValueError("must not contain control characters")
    if raw == OTHER_TYPE:
        raise ValueError(f"{OTHER_TYPE!r} is reserved for types beyond MAX_EVENT_TYPES")
    return raw


class Event(BaseModel):
    """A valid event. Unknown extra keys are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Annotated[
        str,
        Field(min_length=1, max_length=MAX_TYPE_CHARS, strict=True),
        AfterValidator(_label_safe),
    ]
    value: Annotated[float | int, BeforeValidator(_json_number), Field(ge=0)]
    occurred_at: Annotated[datetime, BeforeValidator(_parse_occurred_at)]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message is not an event; `detail` is short enough for an SQS attribute."""

    reason: RejectReason
    detail: str

    def __post_init__(self) -> None:
        if len(self.detail) > MAX_DETAIL_CHARS:
            object.__setattr__(self, "detail", self.detail[: MAX_DETAIL_CHARS - 1] + "…")


def parse_event(body: bytes | str) -> Event | Rejection:
    """Apply the contract's message rules to one message body."""
    try:
        document: Any = json.loads(body)
    except (ValueError, TypeError) as error:  # UnicodeDecodeError is a ValueError
        return Rejection("malformed_json", f"not valid JSON: {error}")
    except RecursionError:  # arrays or objects nested ~1,000 deep, even in an extra key
        return Rejection("malformed_json", "not valid JSON: nested too deeply")
    if not isinstance(document, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {_json_kind(document)}")
    try:
        return Event.model_validate(document)
    except ValidationError as error:
        return _rejection_from(error)
    except RecursionError:
        return Rejection("invalid_field", "a field is nested too deeply")


def _rejection_from(error: ValidationError) -> Rejection:
    problems = error.errors(include_url=False, include_input=False)
    missing = sorted(str(p["loc"][0]) for p in problems if p["type"] == "missing")
    if missing:
        return Rejection("missing_field", "missing: " + ", ".join(missing))
    details = []
    for problem in problems:
        field = ".".join(str(part) for part in problem["loc"][:1])
        details.append(f"{field}: {_plain(problem['msg'])}")
    return Rejection("invalid_field", "; ".join(dict.fromkeys(details)))


def _plain(message: str) -> str:
    return message.removeprefix("Value error, ")


def _json_kind(document: object) -> str:
    if document is None:
        return "null"
    if isinstance(document, bool):
        return "a boolean"
    if isinstance(document, int | float):
        return "a number"
    if isinstance(document, str):
        return "a string"
    if isinstance(document, list):
        return "an array"
    return "an object"
