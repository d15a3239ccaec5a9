"""What the OpenTelemetry variables mean for the worker's one export, each value checked.

The worker deletes a message only after an export that carried its count was stored,
so a variable that changes the export must be honoured exactly, or refused at start.
The pinned SDK (opentelemetry-sdk and the OTLP exporters 1.45.2) reads most of them
itself, in its own way: timeouts in seconds where the specification says milliseconds,
the per-signal protocol not at all, an endpoint without a scheme, a delta preference
and an unknown header silently. The rules here are the specification's; the worker
passes the resolved values to the exporter explicitly, so the SDK's readings never
decide.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote, urlparse

Protocol = Literal["http/protobuf", "grpc"]

# One export attempt may take this long (the specification's unit, milliseconds). The
# upper bound keeps the shutdown budget whatever the setting: see `settings.py`.
MIN_EXPORT_TIMEOUT_MS: Final = 1_000
MAX_EXPORT_TIMEOUT_MS: Final = 20_000
DEFAULT_EXPORT_TIMEOUT_MS: Final = 10_000  # the specification's and the SDK's default
METRICS_PATH: Final = "v1/metrics"
DEFAULT_ENDPOINTS: Final[dict[Protocol, str]] = {
    "http/protobuf": "http://localhost:4318",
    "grpc": "http://localhost:4317",
}
INSTANCE_ID: Final = "service.instance.id"
# A header as OTEL_EXPORTER_OTLP_HEADERS spells it (the specification's W3C baggage
# form): `name=value`, the name an HTTP token, the value percent-encoded UTF-8. The SDK
# also takes a value with spaces as it is, not decoded; it drops any other entry with a
# warning of its own, and the export then goes without it.
_NAME = r"[!#-'*+\-.0-9A-Z^-z|~]+"
_ENCODED_HEADER = re.compile(rf"[ \t]*{_NAME}[ \t]*=[ \t]*([!#-+\--:<-\[\]-~]*)[ \t]*")
_PLAIN_HEADER = re.compile(rf"[ \t]*{_NAME}[ \t]*=[ \t]*[ !#-+\--:<-\[\]-~]*[ \t]*")
# What an HTTP header or gRPC metadata value can carry: visible ASCII, spaces and tabs.
_SENDABLE = re.compile(r"[\t -~]*")
# Variables for signals or mechanisms the worker does not have: each would be ignored.
_NOT_SUPPORTED: Final = (
    (re.compile(r"OTEL_EXPORTER_OTLP_TRACES_\w+"), "the worker exports no traces"),
    (re.compile(r"OTEL_EXPORTER_OTLP_LOGS_\w+"), "the worker exports no logs"),
    (
        re.compile(r"OTEL_CONFIG_FILE"),
        "the worker is configured by the environment variables in its README only",
    ),
    (
        re.compile(r"OTEL_PYTHON_EXPORTER_OTLP_\w*CREDENTIAL_PROVIDER"),
        "the worker's exporter judges every answer with its own HTTP session",
    ),
)


def export_timeout_ms(text: str) -> int:
    """OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT: milliseconds, within the worker's bounds."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError("must be a whole number of milliseconds") from None
    if not MIN_EXPORT_TIMEOUT_MS <= value <= MAX_EXPORT_TIMEOUT_MS:
        raise ValueError(
            f"milliseconds, as OpenTelemetry's specification says: from "
            f"{MIN_EXPORT_TIMEOUT_MS} to {MAX_EXPORT_TIMEOUT_MS} ({MIN_EXPORT_TIMEOUT_MS // 1000} "
            f"to {MAX_EXPORT_TIMEOUT_MS // 1000} s)"
        )
    return value


def http_url(text: str) -> str:
    url = urlparse(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    try:
        url.port  # noqa: B018  (parsing it is the check)
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    return text


def headers(text: str) -> str:
    """OTEL_EXPORTER_OTLP_[METRICS_]HEADERS: `name=value` pairs, comma-separated, each one
    the SDK sends: not dropped by its reading, and decoded to a value a request carries."""
    for entry in re.split(r"[ \t]*,[ \t]*", text):
        if not entry:
            continue
        encoded = _ENCODED_HEADER.fullmatch(entry.strip())
        if encoded is None and not _PLAIN_HEADER.fullmatch(entry.strip()):
            raise ValueError(
                f"{entry!r} is not a name=value header the SDK would send: a value holds "
                "printable ASCII but for '\"', ',', ';' and '\\' (percent-encode those and "
                "any other character, e.g. %3B for ';')"
            )
        if encoded is not None and not _SENDABLE.fullmatch(unquote(encoded[1])):
            raise ValueError(
                f"{entry!r} decodes to a value an HTTP header cannot carry (control or "
                "non-ASCII characters)"
            )
    return text


def resource_attributes(text: str) -> str:
    """OTEL_RESOURCE_ATTRIBUTES: `key=value` pairs, never the instance id.

    Each process start reports its own `service.instance.id`, so that no series ever
    resets and replicas never share one: a fixed id (a pod's name survives a container
    restart; two replicas given the same value) would make Prometheus keep only the
    larger of two lives, and every total read from it short.
    """
    for entry in text.split(","):
        key, equals, _ = entry.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"{entry!r} is not a key=value attribute")
        if key.strip() == INSTANCE_ID:
            raise ValueError(
                f"{INSTANCE_ID} is set by the worker, new at every start, and cannot be "
                "given: a fixed id makes a restarted or second process share one series and "
                "the totals fall short (name the pod with k8s.pod.name instead)"
            )
    return text


def readable_file(text: str) -> str:
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise ValueError("is not a readable file")
    return text


def boolean(text: str) -> bool:
    """The specification's boolean: `true` or `false`, in any case."""
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


def not_supported(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """One line for the first variable the worker would ignore, or None."""
    for name in sorted(n for n, value in environ.items() if value):  # empty is unset
        for pattern, why in _NOT_SUPPORTED:
            if pattern.fullmatch(name.upper()):
                return f"{name.upper()}: not supported: {why}; unset it"
    return None


@dataclass(frozen=True, slots=True)
class OtlpExport:
    """Where and how the checkpoints are exported, resolved once."""

    protocol: Protocol
    # Over HTTP the URL posted to; over gRPC the server's URL (its path is not used).
    endpoint: str
    timeout_seconds: float


def resolve(
    *,
    protocol: Protocol | None,
    metrics_protocol: Protocol | None,
    endpoint: str | None,
    metrics_endpoint: str | None,
    timeout_ms: int | None,
    metrics_timeout_ms: int | None,
    metric_export_timeout_ms: int | None,
) -> OtlpExport:
    """The specification's rules: a per-signal variable wins over the generic one; over
    HTTP a per-signal endpoint is used as given and the generic one gets `/v1/metrics`."""
    chosen: Protocol = metrics_protocol or protocol or "http/protobuf"
    if metrics_endpoint:
        url = metrics_endpoint
    else:
        base = endpoint or DEFAULT_ENDPOINTS[chosen]
        url = base if chosen == "grpc" else f"{base.removesuffix('/')}/{METRICS_PATH}"
    timeout = metrics_timeout_ms or timeout_ms or DEFAULT_EXPORT_TIMEOUT_MS
    if metric_export_timeout_ms is not None:  # a bound on the whole export, so the lesser
        timeout = min(timeout, metric_export_timeout_ms)
    return OtlpExport(chosen, url, timeout / 1000)
