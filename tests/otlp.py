"""Real OTLP metrics receivers for tests (HTTP and gRPC): they decode the protobuf."""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import grpc
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

PROTOBUF: Final = "application/x-protobuf"


def _attributes(pairs: Any) -> dict[str, str]:
    return {kv.key: _value(kv) for kv in pairs}


def _value(kv: KeyValue) -> str:
    which = kv.value.WhichOneof("value")
    return str(getattr(kv.value, which)) if which else ""


def _points_in(request: ExportMetricsServiceRequest) -> int:
    return sum(
        len(getattr(metric, metric.WhichOneof("data")).data_points)
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


def _reject_all(request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
    response = ExportMetricsServiceResponse()
    response.partial_success.rejected_data_points = _points_in(request)
    response.partial_success.error_message = "out of order sample"
    return response


class Exports:
    """Every export received, and the latest cumulative values read out of them."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self._lock = threading.Lock()

    def add(self, request: ExportMetricsServiceRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def received(self) -> list[ExportMetricsServiceRequest]:
        """Every stored export so far, in the order received."""
        with self._lock:
            return list(self.requests)

    def points(self) -> Iterator[tuple[dict[str, str], str, dict[str, str], Any]]:
        """(resource attributes, metric name, point attributes, point) for every point."""
        for request in self.received():
            for rm in request.resource_metrics:
                resource = _attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            yield resource, metric.name, _attributes(point.attributes), point

    def latest(self, metric: str, attribute: str) -> dict[tuple[str, str], float]:
        """Latest cumulative value per (service.instance.id, attribute value)."""
        latest: dict[tuple[str, str], tuple[int, float]] = {}
        for resource, name, attributes, point in self.points():
            if name != metric:
                continue
            key = (resource.get("service.instance.id", ""), attributes.get(attribute, ""))
            value = point.as_double if point.HasField("as_double") else point.as_int
            if key not in latest or point.time_unix_nano >= latest[key][0]:
                latest[key] = (point.time_unix_nano, value)
        return {key: value for key, (_, value) in latest.items()}

    def fleet_totals(self, metric: str, attribute: str) -> dict[str, float]:
        """Sum over processes of each one's latest cumulative value."""
        totals: dict[str, float] = {}
        for (_, label), value in self.latest(metric, attribute).items():
            totals[label] = totals.get(label, 0) + value
        return totals


# How a receiver may answer an export; only "stored" stores it.
ANSWERS: Final = (
    "stored",
    "down",
    "partial",
    "redirect",
    "redirect_to_login",
    "login_page",
    "unavailable",
    "bad_request",
    "silent",
)
LOGIN_PAGE: Final = b"<html><body>Please sign in</body></html>"
# What the Collector's OTLP receiver answers when its exporter failed (tests/
# test_collector_pipeline.py has the reasoning): a retryable error (Prometheus unreachable
# or refusing with 503, the memory limiter) as 503, a permanent one (Prometheus's 400) as
# 400, each with a protobuf google.rpc.Status body.
COLLECTOR_ERRORS: Final = {
    "unavailable": (503, code_pb2.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
    "bad_request": (400, code_pb2.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT),
}


class OTLPReceiver(Exports):
    """OTLP/HTTP (protobuf) on 127.0.0.1 and a free port.

    `answer` makes it misbehave as real receivers and the proxies before them do:
    down (503), a partial success that rejects every point, a redirect with no
    `Location`, an auth proxy's redirect to a login page (which answers GET 200),
    that login page served in place of the answer, the Collector's answers when its
    exporter failed (`unavailable`, `bad_request`), or no answer at all (`silent`).
    `delay` seconds pass between storing an export and answering it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.answer = "stored"
        self.delay = 0.0
        self.attempts = 0  # every POST, whatever the answer
        self.headers: list[dict[str, str]] = []  # each POST's, as received
        self._hang_up = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._reply(200, "text/html", LOGIN_PAGE)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.attempts += 1
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                answer = receiver.answer
                if answer == "stored":
                    receiver.add(request)
                    receiver._hang_up.wait(receiver.delay)
                    self._reply(200, PROTOBUF, ExportMetricsServiceResponse().SerializeToString())
                elif answer == "silent":
                    receiver._hang_up.wait()
                elif answer in COLLECTOR_ERRORS:
                    status, code, _ = COLLECTOR_ERRORS[answer]
                    body = status_pb2.Status(
                        code=code, message="exporting failed"
                    ).SerializeToString()
                    self._reply(status, PROTOBUF, body)
                elif answer == "down":
                    self._reply(503, "text/plain", b"down")
                elif answer == "partial":
                    self._reply(200, PROTOBUF, _reject_all(request).SerializeToString())
                elif answer == "redirect":
                    self._reply(302, "text/plain", b"")
                elif answer == "redirect_to_login":
                    self._reply(302, "text/plain", b"", location="/login")
                else:
                    self._reply(200, "text/html", LOGIN_PAGE)

            def _reply(
                self, status: int, content_type: str, body: bytes, location: str = ""
            ) -> None:
                # The client may have given up waiting (a delayed answer): nothing to tell.
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    if location:
                        self.send_header("Location", location)
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._hang_up.set()  # what still waits answers now
        self._server.shutdown()
        self._server.server_close()


class GrpcOTLPReceiver(Exports, metrics_service_pb2_grpc.MetricsServiceServicer):
    """OTLP/gRPC on 127.0.0.1 and a free port; `partial` rejects every point (status OK);
    `error` answers as the Collector does when its exporter failed (`COLLECTOR_ERRORS`)."""

    def __init__(self) -> None:
        super().__init__()
        self.partial = False
        self.error: str | None = None
        self.attempts = 0
        self.metadata: list[dict[str, str]] = []  # each call's, as received
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        # generated gRPC code carries no type hints
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self._port = self._server.add_insecure_port("127.0.0.1:0")

    def Export(  # noqa: N802 (the generated service's naming)
        self, request: ExportMetricsServiceRequest, context: Any
    ) -> ExportMetricsServiceResponse:
        self.attempts += 1
        self.metadata.append(dict(context.invocation_metadata()))
        if self.error is not None:
            context.abort(COLLECTOR_ERRORS[self.error][2], "exporting failed")
        if self.partial:
            return _reject_all(request)
        self.add(request)
        return ExportMetricsServiceResponse()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)
