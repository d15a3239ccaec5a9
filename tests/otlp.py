"""Real OTLP metrics receivers for tests (HTTP and gRPC): they decode the protobuf."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue


def _attributes(pairs: Any) -> dict[str, str]:
    return {kv.key: _value(kv) for kv in pairs}


def _value(kv: KeyValue) -> str:
    which = kv.value.WhichOneof("value")
    return str(getattr(kv.value, which)) if which else ""


class Exports:
    """Every export received, and the latest cumulative values read out of them."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self._lock = threading.Lock()

    def add(self, request: ExportMetricsServiceRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def points(self) -> Iterator[tuple[dict[str, str], str, dict[str, str], Any]]:
        """(resource attributes, metric name, point attributes, point) for every point."""
        with self._lock:
            requests = list(self.requests)
        for request in requests:
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


class OTLPReceiver(Exports):
    """OTLP/HTTP (protobuf) on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False  # answer 503, as a Collector that is down would
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if receiver.fail:
                    self.send_response(503)
                    self.end_headers()
                    return
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                payload = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

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
        self._server.shutdown()
        self._server.server_close()


class GrpcOTLPReceiver(Exports, metrics_service_pb2_grpc.MetricsServiceServicer):
    """OTLP/gRPC on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        super().__init__()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        # generated gRPC code carries no type hints
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self._port = self._server.add_insecure_port("127.0.0.1:0")

    def Export(  # noqa: N802 (the generated service's naming)
        self, request: ExportMetricsServiceRequest, context: Any
    ) -> ExportMetricsServiceResponse:
        self.add(request)
        return ExportMetricsServiceResponse()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)
