"""Every setting the worker reads, validated once at start-up.

The names are the contract's (and the earlier attempts'): plain environment
variables, no prefix. AWS variables are read by boto3; the few that also shape our
behaviour are checked here too. Every OpenTelemetry variable the metrics export
depends on is a field here, honoured as the specification says or refused
(`otel_config.py` has the rules).
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import otel_config
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
# From SIGTERM to exit, beyond the last long poll: its reply (5 s), an export already under
# way (at most MAX_EXPORT_TIMEOUT_MS), then more attempts to store the final checkpoint
# (at least 10 s more), then the deletes and hand-backs (SHUTDOWN_SETTLE_SECONDS).
SHUTDOWN_MARGIN_SECONDS = 35
# Kept for the deletes and hand-backs after the final export attempt.
SHUTDOWN_SETTLE_SECONDS = 5
# The OpenTelemetry SDK keeps at most 2,000 attribute sets per metric and folds the rest
# into one series with no attributes at all; one of ours is the `_other` bucket.
MAX_EVENT_TYPES_LIMIT = 1_999

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# SQS's rule for a queue name: up to 80 letters, digits, hyphens and underscores; a FIFO
# queue's name ends in ".fifo", within the 80.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$|^(?=.{6,80}$)[A-Za-z0-9_-]+\.fifo$")


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


# The specification's enumerations are lower case; the SDK compares some in any case.
Protocol = Annotated[otel_config.Protocol, BeforeValidator(_lower)]
Compression = Annotated[Literal["none", "gzip", "deflate"], BeforeValidator(_lower)]
ExportTimeout = Annotated[int, BeforeValidator(otel_config.export_timeout_ms)]
OtlpUrl = Annotated[str, BeforeValidator(otel_config.http_url)]
Headers = Annotated[str, BeforeValidator(otel_config.headers)]
ReadableFile = Annotated[str, BeforeValidator(otel_config.readable_file)]
Boolean = Annotated[bool, BeforeValidator(otel_config.boolean)]


class ConfigurationError(Exception):
    """A setting is wrong; the message is one line naming it and the problem."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    sqs_queue_name: str = "hands-on-interview"
    sqs_queue_url: str | None = None
    # A name, or the URL of a queue elsewhere (another account, in the same region).
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
    # Read by boto3 itself; checked here so that a typo is one line at start-up, not a
    # traceback.
    aws_endpoint_url_sqs: str | None = None
    aws_endpoint_url: str | None = None

    # OpenTelemetry. A per-signal variable (`..._METRICS_...`) wins over the generic one.
    otel_sdk_disabled: Boolean | None = None
    otel_resource_attributes: (
        Annotated[str, BeforeValidator(otel_config.resource_attributes)] | None
    ) = None
    otel_metric_export_interval: Annotated[int, Field(ge=100)] = 60_000
    otel_metric_export_timeout: (
        Annotated[int, Field(ge=otel_config.MIN_EXPORT_TIMEOUT_MS)] | None
    ) = None
    otel_metrics_exporter: Annotated[
        Literal["otlp", "console", "none"], BeforeValidator(_lower)
    ] = "otlp"
    otel_traces_exporter: Annotated[Literal["none"] | None, BeforeValidator(_lower)] = None
    otel_logs_exporter: Annotated[Literal["none"] | None, BeforeValidator(_lower)] = None
    otel_metrics_exemplar_filter: Literal["trace_based", "always_on", "always_off"] | None = None
    otel_exporter_otlp_protocol: Protocol | None = None
    otel_exporter_otlp_metrics_protocol: Protocol | None = None
    otel_exporter_otlp_endpoint: OtlpUrl | None = None
    otel_exporter_otlp_metrics_endpoint: OtlpUrl | None = None
    otel_exporter_otlp_timeout: ExportTimeout | None = None
    otel_exporter_otlp_metrics_timeout: ExportTimeout | None = None
    otel_exporter_otlp_headers: Headers | None = None
    otel_exporter_otlp_metrics_headers: Headers | None = None
    otel_exporter_otlp_compression: Compression | None = None
    otel_exporter_otlp_metrics_compression: Compression | None = None
    otel_exporter_otlp_insecure: Boolean | None = None
    otel_exporter_otlp_metrics_insecure: Boolean | None = None
    otel_exporter_otlp_certificate: ReadableFile | None = None
    otel_exporter_otlp_metrics_certificate: ReadableFile | None = None
    otel_exporter_otlp_client_key: ReadableFile | None = None
    otel_exporter_otlp_metrics_client_key: ReadableFile | None = None
    otel_exporter_otlp_client_certificate: ReadableFile | None = None
    otel_exporter_otlp_metrics_client_certificate: ReadableFile | None = None
    # The worker's reader asks for cumulative sums and its own histogram buckets, whatever
    # these say: only the values that change nothing are accepted.
    otel_exporter_otlp_metrics_temporality_preference: Annotated[
        Literal["cumulative"] | None, BeforeValidator(_lower)
    ] = None
    otel_exporter_otlp_metrics_default_histogram_aggregation: Annotated[
        Literal["explicit_bucket_histogram"] | None, BeforeValidator(_lower)
    ] = None

    @field_validator("*", mode="before")
    @classmethod
    def _empty_otel_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # As the OpenTelemetry SDK reads its variables (`os.environ.get(...) or default`).
        if info.field_name and info.field_name.startswith("otel_") and value == "":
            raise PydanticUseDefault
        return value

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

    @field_validator("aws_endpoint_url_sqs", "aws_endpoint_url")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        return None if value is None else otel_config.http_url(value)

    @field_validator("otel_sdk_disabled")
    @classmethod
    def _sdk_enabled(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError(
                "the worker deletes a message only once its count was exported, and a "
                "disabled SDK exports nothing; to run without a Collector, set "
                "OTEL_METRICS_EXPORTER=none"
            )
        return value

    @field_validator("otel_traces_exporter", "otel_logs_exporter", mode="wrap")
    @classmethod
    def _metrics_only(cls, value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError("the worker exports metrics only: none, or unset it") from None

    @field_validator("otel_exporter_otlp_metrics_temporality_preference", mode="wrap")
    @classmethod
    def _cumulative(cls, value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(
                "the worker exports cumulative sums only (a lost export is made good by the "
                "next): cumulative, or unset it"
            ) from None

    @field_validator("otel_exporter_otlp_metrics_default_histogram_aggregation", mode="wrap")
    @classmethod
    def _explicit_buckets(cls, value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(
                "the worker's histograms have the fixed buckets its dashboard reads: "
                "explicit_bucket_histogram, or unset it"
            ) from None

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

    @model_validator(mode="after")
    def _otlp_export_is_consistent(self) -> Settings:
        if self.otel_metrics_exporter != "otlp":
            return self
        export = self.otlp_export
        url = urlparse(export.endpoint)
        named = (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
            if self.otel_exporter_otlp_metrics_endpoint
            else "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if export.protocol == "grpc" and url.path not in ("", "/"):
            raise ValueError(
                f"{named}={export.endpoint} has a path, which gRPC does not use: "
                "give the server's URL only"
            )
        insecure, insecure_name = self.otel_exporter_otlp_metrics_insecure, "METRICS_INSECURE"
        if insecure is None:
            insecure, insecure_name = self.otel_exporter_otlp_insecure, "INSECURE"
        if insecure is not None and insecure != (url.scheme == "http"):
            raise ValueError(
                f"OTEL_EXPORTER_OTLP_{insecure_name}={str(insecure).lower()} contradicts the "
                f"endpoint {export.endpoint}: its scheme decides (http:// plain, https:// TLS)"
            )
        key = self.otel_exporter_otlp_metrics_client_key or self.otel_exporter_otlp_client_key
        cert = (
            self.otel_exporter_otlp_metrics_client_certificate
            or self.otel_exporter_otlp_client_certificate
        )
        if key and not cert:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_CLIENT_KEY is set without OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
            )
        return self

    @property
    def otlp_export(self) -> otel_config.OtlpExport:
        """Where and how checkpoints are exported, per-signal variables first."""
        return otel_config.resolve(
            protocol=self.otel_exporter_otlp_protocol,
            metrics_protocol=self.otel_exporter_otlp_metrics_protocol,
            endpoint=self.otel_exporter_otlp_endpoint,
            metrics_endpoint=self.otel_exporter_otlp_metrics_endpoint,
            timeout_ms=self.otel_exporter_otlp_timeout,
            metrics_timeout_ms=self.otel_exporter_otlp_metrics_timeout,
            metric_export_timeout_ms=self.otel_metric_export_timeout,
        )

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
    def final_export_seconds(self) -> int:
        """From SIGTERM, how long the final checkpoint may keep trying to be stored."""
        return self.shutdown_budget_seconds - SHUTDOWN_SETTLE_SECONDS

    @property
    def export_interval_seconds(self) -> float:
        return self.otel_metric_export_interval / 1000


def _last_segment(queue: str) -> str:
    return queue.rstrip("/").rsplit("/", 1)[-1]


def load_settings() -> Settings:
    """Read the environment; raise `ConfigurationError` with one readable line."""
    unsupported = otel_config.not_supported(os.environ)
    if unsupported is not None:
        raise ConfigurationError(f"invalid configuration: {unsupported}")
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
