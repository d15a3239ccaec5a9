"""The contract's message rules, one by one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.events import (
    MAX_DETAIL_CHARS,
    MAX_EVENT_VALUE,
    REJECT_REASONS,
    Event,
    Rejection,
    parse_event,
)


def body(**fields: object) -> bytes:
    event: dict[str, object] = {
        "type": "purchase",
        "value": 12.5,
        "occurred_at": "2020-10-06 10:02:05",
    }
    event.update(fields)
    return json.dumps({k: v for k, v in event.items() if v is not ...}).encode()


def reason(raw: bytes | str) -> str:
    outcome = parse_event(raw)
    assert isinstance(outcome, Rejection), outcome
    return outcome.reason


def test_a_kata_event_parses_with_its_time_in_utc() -> None:
    event = parse_event(body())
    assert event == Event(
        type="purchase", value=12.5, occurred_at=datetime(2020, 10, 6, 10, 2, 5, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-10-06 10:02:05", datetime(2020, 10, 6, 10, 2, 5, tzinfo=UTC)),
        ("2020-10-06T10:02:05", datetime(2020, 10, 6, 10, 2, 5, tzinfo=UTC)),
        ("2020-10-06T10:02:05Z", datetime(2020, 10, 6, 10, 2, 5, tzinfo=UTC)),
        ("2020-10-06T10:02:05.250+02:00",
         datetime(2020, 10, 6, 10, 2, 5, 250_000, tzinfo=timezone(timedelta(hours=2)))),
    ],
)  # fmt: skip
def test_occurred_at_accepts_the_kata_format_and_iso_8601(text: str, expected: datetime) -> None:
    event = parse_event(body(occurred_at=text))
    assert isinstance(event, Event)
    assert event.occurred_at == expected


@pytest.mark.parametrize("value", [0, 1, 12.5, MAX_EVENT_VALUE, float(MAX_EVENT_VALUE)])
def test_any_finite_non_negative_json_number_is_a_value(value: float) -> None:
    event = parse_event(body(value=value))
    assert isinstance(event, Event)
    assert event.value == value


def test_extra_keys_are_ignored() -> None:
    event = parse_event(body(session="abc", nested={"x": 1}))
    assert isinstance(event, Event)
    assert event.type == "purchase"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "malformed_json"),
        (b"{not json", "malformed_json"),
        (b"\xff\xfe{}", "malformed_json"),
        (b'{"type": "a", "value": NaN, "occurred_at": "2020-10-06 10:02:05"}', "invalid_field"),
        (
            b'{"type": "a", "value": Infinity, "occurred_at": "2020-10-06 10:02:05"}',
            "invalid_field",
        ),
        (
            b'{"type": "a", "value": -Infinity, "occurred_at": "2020-10-06 10:02:05"}',
            "invalid_field",
        ),
        (b"[]", "not_an_object"),
        (b'"purchase"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
        (body(type=...), "missing_field"),
        (body(value=...), "missing_field"),
        (body(occurred_at=...), "missing_field"),
        (body(value=True), "invalid_field"),
        (body(value=False), "invalid_field"),
        (body(value="12.5"), "invalid_field"),
        (body(value="abcde"), "invalid_field"),
        (body(value=None), "invalid_field"),
        (body(value=-0.01), "invalid_field"),
        (body(type=""), "invalid_field"),
        (body(type="x" * 65), "invalid_field"),
        (body(type=7), "invalid_field"),
        (body(occurred_at="abcde"), "invalid_field"),
        (body(occurred_at="2020-10-06"), "invalid_field"),
        (body(occurred_at=1601978525), "invalid_field"),
        (body(occurred_at="2020-13-06 10:02:05"), "invalid_field"),
        # A sum must stay finite: 1e308 twice is inf, and a 400-digit integer has no float.
        (body(value=1e308), "invalid_field"),
        (body(value=MAX_EVENT_VALUE + 0.01), "invalid_field"),
        (body(value=10**400), "invalid_field"),
        # A type is a label value: never blank, never control characters, never "_other".
        (body(type="   "), "invalid_field"),
        (body(type="a\u0007b"), "invalid_field"),
        (body(type="page\nview"), "invalid_field"),
        (body(type="a\u200bb"), "invalid_field"),
        (body(type="_other"), "invalid_field"),
        # Nested past the JSON parser's recursion limit, even inside an ignored key.
        (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "malformed_json"),
        (b'{"x": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}", "malformed_json"),
    ],
)
def test_every_broken_rule_has_its_reason(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_a_type_of_64_characters_is_still_valid() -> None:
    assert isinstance(parse_event(body(type="x" * 64)), Event)


@pytest.mark.parametrize("type_", ["gift\u00a0card", "line\u2028item", "caf\u00e9"])
def test_a_type_that_is_not_printable_but_has_no_control_character_is_valid(type_: str) -> None:
    # str.isprintable() is only the fast path: a no-break space or a line separator is
    # not printable, yet not a control or format character either.
    outcome = parse_event(body(type=type_))
    assert isinstance(outcome, Event)
    assert outcome.type == type_


def test_missing_field_names_every_missing_key() -> None:
    outcome = parse_event(b'{"value": 1}')
    assert outcome == Rejection("missing_field", "missing: occurred_at, type")


def test_detail_says_what_is_wrong_with_which_field() -> None:
    outcome = parse_event(body(value=True))
    assert isinstance(outcome, Rejection)
    assert outcome.detail == "value: must be a JSON number, got a boolean"


def test_detail_fits_an_sqs_attribute() -> None:
    outcome = parse_event(b"{" + b'"k": 1, ' * 200)
    assert isinstance(outcome, Rejection)
    assert len(outcome.detail) <= MAX_DETAIL_CHARS


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    outcome = parse_event(raw)
    assert isinstance(outcome, Event) or outcome.reason in REJECT_REASONS


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["type", "value", "occurred_at", "other"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    )
)
def test_arbitrary_objects_are_an_event_or_one_of_the_four_reasons(
    document: dict[str, object],
) -> None:
    outcome = parse_event(json.dumps(document))
    if isinstance(outcome, Rejection):
        assert outcome.reason in {"missing_field", "invalid_field"}
        assert len(outcome.detail) <= MAX_DETAIL_CHARS
    else:
        assert outcome.value >= 0
        assert 1 <= len(outcome.type) <= 64


@given(st.integers(min_value=1, max_value=3_000), st.sampled_from(["[", '{"k": ']))
def test_any_nesting_depth_is_an_outcome_never_an_exception(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = '{"type": "a", "value": 1, "occurred_at": "2020-10-06 10:02:05", "x": '
    raw += opener * depth + ("1" if opener != "[" else "") + closer * depth + "}"
    outcome = parse_event(raw)
    assert isinstance(outcome, Event) or outcome.reason == "malformed_json"
