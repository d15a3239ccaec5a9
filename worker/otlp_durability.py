"""When an export counts as stored: the OTLP receiver's own answer, judged.

The SDK's exporters call any HTTP status below 400 a success and never read the
response, and its gRPC exporter drops the reply, so an auth proxy's redirect or a
Collector's partial success ("rejected N points") would let the worker delete
messages nobody counted. The exporters built here see every answer first and
fail the export unless the receiver said it stored every point.

`JudgedExporter.send` returns the verdict of one export. The SDK's exporter swallows
why an attempt failed (it returns only FAILURE), so the judging session and interceptor
write the reason into the judgement of the call in progress: one object per call, made
and read by `send` in the same thread, never a field a caller reads afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
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
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from .faststream_sqs import STORED, Verdict, not_stored

PROTOBUF: Final = "application/x-protobuf"


class NotStored(Exception):
    """The receiver answered, but did not say it stored every point."""


@dataclass(slots=True)
class _Judgement:
    """Why the export in progress was not stored, as its last answer said (None: it was)."""

    failure: str | None = None


_judging: ContextVar[_Judgement] = ContextVar("otlp_judging")


def _judge(failure: str | None) -> None:
    """Record the latest answer's reading; outside `send` (the SDK exporting on its own)
    there is no call to report to, and the exporter's own FAILURE still stands."""
    judgement = _judging.get(None)
    if judgement is not None:
        judgement.failure = failure


ExporterFactory = Callable[[float], MetricExporter]
"""An exporter whose attempts may take the given number of seconds."""


class JudgedExporter:
    """Sends collected metrics and returns the verdict: STORED only on the receiver's
    word that it stored every point."""

    def __init__(self, exporter: MetricExporter, patient: ExporterFactory | None = None) -> None:
        self._exporter = exporter
        self._patient = patient

    def send(self, data: MetricsData, timeout: float | None = None) -> Verdict:
        """One export; `timeout`: seconds this attempt may take, when it must differ
        from the exporter's own (the final exports, at shutdown)."""
        exporter = self._exporter
        if timeout is not None and self._patient is not None:
            exporter = self._patient(timeout)
        judgement = _Judgement()
        token = _judging.set(judgement)
        try:
            result = exporter.export(data)
        except Exception as error:
            result = MetricExportResult.FAILURE
            judgement.failure = judgement.failure or f"export failed: {error}"
        finally:
            _judging.reset(token)
            if exporter is not self._exporter:
                exporter.shutdown()
        if result is MetricExportResult.SUCCESS:
            return STORED
        return not_stored(judgement.failure or "export failed")

    def shutdown(self) -> None:
        self._exporter.shutdown()


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

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs["allow_redirects"] = False
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as error:
            _judge(f"unreachable: {type(error).__name__} for {url}")
            raise
        failure = why_not_stored(response.status_code, response.headers, response.content)
        _judge(failure)
        if failure is not None:
            raise NotStored(failure)
        return response


class _JudgingInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = continuation(details, request)
        error = call.exception()
        if error is not None:
            _judge(f"refused: gRPC {call.code().name}")
            return call  # the SDK handles RPC errors (and retries the transient ones)
        failure = _rejected(call.result())
        _judge(failure)
        if failure is not None:
            raise NotStored(failure)
        return call


class _JudgingGrpcExporter(GrpcExporter):
    def _initialize_channel_and_stub(self) -> None:
        # The SDK (pinned exactly in pyproject.toml) builds its channel here, also when
        # it reconnects; the interceptor must wrap every channel it makes.
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        channel = grpc.intercept_channel(self._channel, _JudgingInterceptor())
        self._client = MetricsServiceStub(channel)  # type: ignore[no-untyped-call,assignment]


def http_exporter(endpoint: str, timeout: float) -> HttpExporter:
    """OTLP/HTTP to `endpoint` (the URL posted to), each export within `timeout` seconds,
    durable only on a stored answer. Headers, compression and certificates come from
    OTEL_* as the SDK reads them (`settings.py` has checked them)."""
    return HttpExporter(endpoint=endpoint, timeout=timeout, session=_JudgingSession())


def grpc_exporter(endpoint: str, timeout: float) -> GrpcExporter:
    """OTLP/gRPC to `endpoint`, each export within `timeout` seconds, durable only without
    a partial success; the rest from OTEL_* as the SDK reads them."""
    return _JudgingGrpcExporter(endpoint=endpoint, timeout=timeout)
