"""Fails loudly when a FastStream upgrade changes the internals our adapter uses.

`worker/faststream_sqs/` is the only code importing `faststream._internal`; this
pins what it relies on: names, constructor parameters, hooks and config fields.
"""

from __future__ import annotations

import dataclasses
import inspect
from importlib.metadata import version

import pytest
from faststream._internal.broker import BrokerUsecase
from faststream._internal.broker.registrator import Registrator
from faststream._internal.configs import BrokerConfig, SubscriberUsecaseConfig
from faststream._internal.endpoint.subscriber import SubscriberSpecification, SubscriberUsecase
from faststream._internal.endpoint.subscriber.call_item import CallsCollection  # noqa: F401
from faststream._internal.logger import DefaultLoggerStorage, make_logger_state
from faststream._internal.logger.logging import get_broker_logger
from faststream._internal.testing.broker import TestBroker, change_producer


def parameters(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


def test_the_pinned_version_is_installed() -> None:
    assert version("faststream") == "0.7.8"


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (SubscriberUsecase.__init__, ["self", "config", "specification", "calls"]),
        (
            SubscriberSpecification.__init__,
            ["self", "_outer_config", "specification_config", "calls"],
        ),
        (
            BrokerUsecase.__init__,
            ["self", "config", "specification", "routers", "connection_kwargs"],
        ),
        (Registrator.subscriber, ["self", "subscriber", "persistent"]),
        (SubscriberUsecase.add_call, ["self", "parser_", "decoder_", "dependencies_", "codec_"]),
        (SubscriberUsecase.consume, ["self", "msg"]),
        (SubscriberUsecase.process_message, ["self", "msg"]),
        (make_logger_state, ["logger", "log_level", "default_storage_cls"]),
        (
            get_broker_logger,
            ["name", "default_context", "message_id_ln", "fmt", "context", "log_level"],
        ),
        (TestBroker._patch_producer, ["self", "broker"]),
        (TestBroker._fake_connect, ["self", "broker", "args", "kwargs"]),
        (change_producer, ["config", "producer"]),
    ],
)
def test_signatures_we_call_or_override(func: object, expected: list[str]) -> None:
    assert parameters(func) == expected


def test_hooks_we_implement_are_still_abstract_or_present() -> None:
    for name in (
        "start",
        "stop",
        "_post_start",
        "_make_response_publisher",
        "get_one",
        "__aiter__",
        "get_log_context",
    ):
        assert hasattr(SubscriberUsecase, name), name
    abstract = [
        (BrokerUsecase, ("_connect", "ping", "publish", "request")),
        (DefaultLoggerStorage, ("get_logger",)),
        (SubscriberSpecification, ("channel_labels", "get_schema")),
    ]
    for owner, names in abstract:
        for name in names:
            member = inspect.getattr_static(owner, name)
            member = getattr(member, "fget", member)
            assert getattr(member, "__isabstractmethod__", False), f"{owner.__name__}.{name}"


def test_config_fields_we_set() -> None:
    broker_fields = {f.name for f in dataclasses.fields(BrokerConfig)}
    assert {
        "broker_middlewares", "broker_parser", "broker_decoder", "producer", "logger", "fd_config",
        "broker_dependencies", "graceful_timeout", "ack_policy", "extra_context",
    } <= broker_fields  # fmt: skip
    subscriber_fields = {f.name for f in dataclasses.fields(SubscriberUsecaseConfig)}
    assert {"_outer_config", "no_reply", "_ack_policy", "parser", "decoder"} <= subscriber_fields
