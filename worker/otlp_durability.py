"""When an export counts as stored: the OTLP receiver's own answer, judged.

The SDK's exporters call any HTTP status below 400 a success and never read the
response, and its gRPC exporter drops the reply, so an auth proxy's redirect or a
Collector's partial success ("rejected N points") would let the worker delete
messages nobody counted. The exporters built here see every answer first and
fail the export unless the receiver said it stored every point.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import grpc
import requests
from google.protobuf.message import DecodeError
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpExporter,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
    MetricsServiceStub,
)

PROTOBUF: Final = "application/x-protobuf"


class NotStored(Exception):
    """The receiver answered, but did not say it stored every point."""


class ExportVerdicts:
    """The reason the latest export attempt was not durable (None: it was)."""

    def __init__(self) -> None:
        self.last_failure: str | None = None

    def record(self, failure: str | None) -> None:
        self.last_failure = failure


def why_not_stored(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    """None when an OTLP/HTTP answer means "stored"; otherwise why not, as `kind: detail`."""
    if 300 <= status < 400:
        target = headers.get("Location") or "nowhere"
        return f"redirected: HTTP {status} to {target} (an OTLP receiver never redirects)"
    if not 200 <= status < 300:
        return f"refused: HTTP {status}"
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if body and content_type not in ("", PROTOBUF):
        return f"not an OTLP answer: HTTP {status} with a {content_type} body"
    response = ExportMetricsServiceResponse()
    try:
        response.ParseFromString(body)
    except DecodeError:
        return f"not an OTLP answer: HTTP {status} with a body that is not protobuf"
    return _rejected(response)


def _rejected(response: ExportMetricsServiceResponse) -> str | None:
    rejected = response.partial_success.rejected_data_points
    if rejected:
        message = response.partial_success.error_message or "no reason given"
        return f"points rejected: {rejected} data point(s) ({message})"
    return None


class _JudgingSession(requests.Session):
    """What the SDK's HTTP exporter posts with: a non-durable answer becomes an error."""

    def __init__(self, verdicts: ExportVerdicts) -> None:
        super().__init__()
        self._verdicts = verdicts

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs["allow_redirects"] = False
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as error:
            self._verdicts.record(f"unreachable: {type(error).__name__} for {url}")
            raise
        failure = why_not_stored(response.status_code, response.headers, response.content)
        self._verdicts.record(failure)
        if failure is not None:
            raise NotStored(failure)
        return response


class _JudgingInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, verdicts: ExportVerdicts) -> None:
        self._verdicts = verdicts

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = continuation(details, request)
        error = call.exception()
        if error is not None:
            self._verdicts.record(f"refused: gRPC {call.code().name}")
            return call  # the SDK handles RPC errors (and retries the transient ones)
        failure = _rejected(call.result())
        self._verdicts.record(failure)
        if failure is not None:
            raise NotStored(failure)
        return call


class _JudgingGrpcExporter(GrpcExporter):
    def __init__(self, verdicts: ExportVerdicts, endpoint: str, timeout: float) -> None:
        self._verdicts = verdicts
        super().__init__(endpoint=endpoint, timeout=timeout)

    def _initialize_channel_and_stub(self) -> None:
        # The SDK (pinned exactly in pyproject.toml) builds its channel here, also when
        # it reconnects; the interceptor must wrap every channel it makes.
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        channel = grpc.intercept_channel(self._channel, _JudgingInterceptor(self._verdicts))
        self._client = MetricsServiceStub(channel)  # type: ignore[no-untyped-call,assignment]


def http_exporter(verdicts: ExportVerdicts, endpoint: str, timeout: float) -> HttpExporter:
    """OTLP/HTTP to `endpoint` (the URL posted to), each export within `timeout` seconds,
    durable only on a stored answer. Headers, compression and certificates come from
    OTEL_* as the SDK reads them (`settings.py` has checked them)."""
    return HttpExporter(endpoint=endpoint, timeout=timeout, session=_JudgingSession(verdicts))


def grpc_exporter(verdicts: ExportVerdicts, endpoint: str, timeout: float) -> GrpcExporter:
    """OTLP/gRPC to `endpoint`, each export within `timeout` seconds, durable only without
    a partial success; the rest from OTEL_* as the SDK reads them."""
    return _JudgingGrpcExporter(verdicts, endpoint, timeout)
