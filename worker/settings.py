"""Every setting the worker reads, validated once at start-up.

The names are the contract's (and the earlier attempts'): plain environment
variables, no prefix. OpenTelemetry and AWS variables are read by their own SDKs;
the few that also shape our behaviour are checked here too.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .faststream_sqs import (
    DEFAULT_CONCURRENCY,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_VISIBILITY_TIMEOUT,
    DEFAULT_WAIT_SECONDS,
    FIFO_SUFFIX,
    MAX_BATCH_ENTRIES,
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT_SECONDS,
    Transport,
    is_fifo,
    long_poll_fits,
)

# The worker extends a held message's visibility every third of the timeout and keeps
# a handled message up to a second for its checkpoint; below this, one slow SQS call
# lets a message reappear (and be counted twice) while it is still held.
MIN_VISIBILITY_TIMEOUT = 5
# Stop polling (one long poll), finish in-hand work, export (OTLP's 10 s timeout), delete.
SHUTDOWN_MARGIN_SECONDS = 25
# The OpenTelemetry SDK keeps at most 2,000 attribute sets per metric and folds the rest
# into one series with no attributes at all; one of ours is the `_other` bucket.
MAX_EVENT_TYPES_LIMIT = 1_999

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# SQS's rule for a queue name: up to 80 letters, digits, hyphens and underscores; a FIFO
# queue's name ends in ".fifo", within the 80.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$|^(?=.{6,80}$)[A-Za-z0-9_-]+\.fifo$")


class ConfigurationError(Exception):
    """A setting is wrong; the message is one line naming it and the problem."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    sqs_queue_name: str = "hands-on-interview"
    sqs_queue_url: str | None = None
    # A name, or the URL of a queue elsewhere (another account or region).
    dlq_queue_name: str | None = None
    sqs_visibility_timeout: Annotated[int, Field(le=MAX_VISIBILITY_TIMEOUT)] = (
        DEFAULT_VISIBILITY_TIMEOUT
    )
    sqs_max_receive_count: Annotated[int, Field(ge=1, le=1000)] = 3
    max_messages_per_batch: Annotated[int, Field(ge=1, le=MAX_BATCH_ENTRIES)] = MAX_BATCH_ENTRIES
    sqs_wait_time_seconds: Annotated[int, Field(ge=0, le=MAX_WAIT_SECONDS)] = DEFAULT_WAIT_SECONDS
    sqs_read_timeout: Annotated[int, Field(ge=1, le=300)] = DEFAULT_READ_TIMEOUT
    # What ReceiveMessage and DeleteMessageBatch travel over: awscrt when it can serve
    # boto3's configuration (auto), awscrt or a refusal at start (crt), boto3 (boto3).
    sqs_transport: Transport = "auto"
    worker_concurrency: Annotated[int, Field(ge=1, le=64)] = DEFAULT_CONCURRENCY
    max_event_types: Annotated[int, Field(ge=1, le=MAX_EVENT_TYPES_LIMIT)] = 100
    health_port: Annotated[int, Field(ge=0, le=65_535)] = 8080
    log_level: LogLevel = "INFO"
    log_format: Literal["console", "json"] = "console"
    aws_region: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    otel_metric_export_interval: Annotated[int, Field(ge=100)] = 60_000
    otel_metrics_exporter: Literal["otlp", "console", "none"] = "otlp"
    otel_exporter_otlp_protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    # Read by boto3 and the OTLP exporter themselves; checked here so that a typo is one
    # line at start-up, not a traceback (boto3) or a worker that never deletes (OTLP).
    aws_endpoint_url_sqs: str | None = None
    aws_endpoint_url: str | None = None
    otel_exporter_otlp_endpoint: str | None = None

    @field_validator("sqs_queue_name")
    @classmethod
    def _a_queue_name(cls, value: str) -> str:
        if not _QUEUE_NAME.match(value):
            raise ValueError(
                "must be 1 to 80 letters, digits, hyphens or underscores (a FIFO queue's name "
                "ends in .fifo, within the 80)"
            )
        return value

    @field_validator("dlq_queue_name")
    @classmethod
    def _a_queue_name_or_url(cls, value: str | None) -> str | None:
        if value is None or "://" in value:
            return None if value is None else cls._an_http_url(value)
        return cls._a_queue_name(value)

    @field_validator("sqs_queue_url")
    @classmethod
    def _a_queue_url(cls, value: str | None) -> str | None:
        return cls._an_http_url(value)

    @field_validator(
        "aws_endpoint_url_sqs",
        "aws_endpoint_url",
        "otel_exporter_otlp_endpoint",
    )
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlparse(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            url.port  # noqa: B018  (parsing it is the check)
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        return value

    @model_validator(mode="after")
    def _default_dlq_name(self) -> Settings:
        if self.dlq_queue_name is None:
            # "events" -> "events-dlq"; "events.fifo" -> "events-dlq.fifo" (the suffix last).
            stem = _last_segment(self.queue).removesuffix(FIFO_SUFFIX)
            suffix = FIFO_SUFFIX if is_fifo(self.queue) else ""
            object.__setattr__(
                self, "dlq_queue_name", f"{stem[: 80 - 4 - len(suffix)]}-dlq{suffix}"
            )
        return self

    @model_validator(mode="after")
    def _fits_the_ack_design(self) -> Settings:
        if self.sqs_visibility_timeout < MIN_VISIBILITY_TIMEOUT:
            raise ValueError(
                f"SQS_VISIBILITY_TIMEOUT={self.sqs_visibility_timeout} is too short: the worker "
                f"needs at least {MIN_VISIBILITY_TIMEOUT} s to extend a held message's "
                "visibility before it expires"
            )
        if not long_poll_fits(self.sqs_wait_time_seconds, self.sqs_read_timeout):
            raise ValueError(
                f"SQS_WAIT_TIME_SECONDS={self.sqs_wait_time_seconds} must be below "
                f"SQS_READ_TIMEOUT={self.sqs_read_timeout}: a long poll would be cut off mid-wait"
            )
        return self

    @property
    def dead_letter_queue_name(self) -> str:
        assert self.dlq_queue_name is not None  # set by the validator above
        return self.dlq_queue_name

    @property
    def queue(self) -> str:
        """What the subscriber consumes: the URL when given, else the name."""
        return self.sqs_queue_url or self.sqs_queue_name

    @property
    def shutdown_budget_seconds(self) -> int:
        """From SIGTERM to exit, at most: what grace periods must exceed."""
        return self.sqs_wait_time_seconds + SHUTDOWN_MARGIN_SECONDS

    @property
    def export_interval_seconds(self) -> float:
        return self.otel_metric_export_interval / 1000


def _last_segment(queue: str) -> str:
    return queue.rstrip("/").rsplit("/", 1)[-1]


def load_settings() -> Settings:
    """Read the environment; raise `ConfigurationError` with one readable line."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(_one_line(error)) from None


def _one_line(error: ValidationError) -> str:
    problems = []
    for problem in error.errors(include_url=False):
        if not problem["loc"]:  # a rule over several settings names them itself
            problems.append(str(problem["msg"]).removeprefix("Value error, "))
            continue
        name = str(problem["loc"][0]).upper()
        given = problem.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        text = str(problem["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {text[:1].lower()}{text[1:]}{shown}")
    return "invalid configuration: " + "; ".join(problems)
