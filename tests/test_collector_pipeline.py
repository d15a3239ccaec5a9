"""The Collector acknowledges only what its exporter delivered to Prometheus (issue 22).

The worker deletes a message once its export was *stored*; between the worker and
Prometheus stands the Collector, and its answer is what the worker judges. So every
stage between the OTLP receiver and the exporter must pass Prometheus's outcome back
before the receiver answers. From the Collector's own source, at the release tag
v0.159.0 of github.com/open-telemetry/opentelemetry-collector (the components that
otelcol-contrib v0.159.0 ships, per distributions/otelcol-contrib/manifest.yaml of
opentelemetry-collector-releases at v0.159.0; the files below are unchanged from, or
only reformatted since, v0.152.1, the image compose.yaml pinned when this was written):

- The receiver answers after the pipeline returns. receiver/otlpreceiver/internal/metrics/
  otlp.go, `Export`: `err := r.nextConsumer.ConsumeMetrics(ctx, md)`, then
  `errors.GetStatusFromError(err)`. receiver/otlpreceiver/internal/errors/errors.go: an
  error carrying a gRPC status keeps its code; one without is `Unavailable` (retryable)
  unless `consumererror.IsPermanent`, then `Internal`. Over HTTP,
  receiver/otlpreceiver/otlphttp.go `writeError` maps the code with
  `GetHTTPStatusCodeFromStatus`: Unavailable (and Canceled, DeadlineExceeded, Aborted,
  OutOfRange, DataLoss) -> 503, ResourceExhausted -> 429, InvalidArgument -> 400,
  Unauthenticated -> 401, PermissionDenied -> 403, Unimplemented -> 404, anything else
  (Unknown, Internal) -> 500, the body a protobuf google.rpc.Status. Success is 200.
- The exporter's errors carry Prometheus's answer. exporter/otlphttpexporter/otlp.go,
  `export`: a 2xx is success; otherwise the error is
  `statusutil.NewStatusFromMsgAndHTTPCode(msg, resp.StatusCode)` (internal/statusutil/
  helper.go: 400 -> InvalidArgument, 502/503/504 -> Unavailable, 429 ->
  ResourceExhausted, else Unknown), wrapped in `consumererror.NewPermanent` unless the
  status is 429, 502, 503 or 504 (`isRetryableStatusCode`). A failed connection is
  `failed to make an HTTP request: %w`, retryable. Prometheus's OTLP handler answers 200
  on success, 400 for out-of-order, duplicate or too-old samples, 500 otherwise.
- The retry sender returns the last error, wrapped, so its status survives
  (grpc-go's `status.FromError` unwraps): exporter/exporterhelper/internal/
  retry_sender.go, `Send`: a permanent error returns at once (`not retryable error:
  %w`); a retryable one is retried with exponential backoff until the next retry would
  start after `max_elapsed_time` (`no more retries left: %w`) or after the request's
  deadline, or the request is cancelled (the worker gave up and hung up).
- So, with no queue: Prometheus unreachable or answering 503 reaches the worker as 503
  (gRPC UNAVAILABLE), retryable; Prometheus's 400 as 400 (INVALID_ARGUMENT), its 500
  as 500 (UNKNOWN): permanent for the Collector, "not stored" for the worker either
  way, which keeps its messages and retries (tests/test_durability.py answers the
  worker with exactly these).
- What answers early. exporter/exporterhelper/internal/base_exporter.go,
  `NewBaseExporter`: with `sending_queue` present (the otlphttp factory's default,
  exporter/otlphttpexporter/factory.go `createDefaultConfig`: `configoptional.Some(
  NewDefaultQueueConfig())`, queue_sender.go: 1,000 requests in memory, not blocking
  when full), `Send` puts the request in the queue and returns; the queue's consumers
  export later and, after retries, log "Dropping data". `sending_queue: {enabled:
  false}` makes the option None (config/configoptional/optional.go `Unmarshal`; behind
  the `configoptional.AddEnabledField` gate, beta and on by default, at v0.152.1), and
  then `firstSender` is the retry sender itself: synchronous.
  processor/batchprocessor/batch_processor.go: `ConsumeMetrics` ->
  `singleShardBatcher.consume` puts the data on a channel and returns nil: the receiver
  answers 200 before anything was sent. processor/memorylimiterprocessor/memorylimiter.go
  `processMetrics` either refuses (`memorylimiter.ErrDataRefused`, no status, not
  permanent: 503) or returns the data, which processor/processorhelper/metrics.go passes
  on with `nextConsumer.ConsumeMetrics` and whose error it returns: synchronous.
- How long the worker waits. otlphttp drops exporterhelper's own timeout and relies on
  the HTTP client's (`exporterhelper.WithTimeout(TimeoutConfig{Timeout: 0})`, "we rely on
  http.Client timeout logic"; config/confighttp/client.go: `timeout`, 30 s by the
  factory's default). The last retry starts before `max_elapsed_time`, so an answer
  comes within `timeout` + `max_elapsed_time` (default 30 s + 5 min).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tests.test_observability import COLLECTOR_CONFIG
from worker.otel_config import DEFAULT_EXPORT_TIMEOUT_MS

# Processors proven above to return the next stage's outcome before answering.
SYNCHRONOUS_PROCESSORS = {"memory_limiter"}
EXPORTERS = {"otlp_http", "otlphttp"}
# The Collector must answer well inside the worker's default export timeout, or the
# worker times out (outcome unknown) while the Collector still retries.
LONGEST_ANSWER_SECONDS = DEFAULT_EXPORT_TIMEOUT_MS / 1000 / 2


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert "".join(a + b for a, b in parts) == duration, duration
    return sum(float(amount) * units[unit] for amount, unit in parts)


def early_acknowledgers(config: dict[str, Any]) -> list[str]:
    """Every stage between the receiver and Prometheus that may answer before Prometheus
    did, or make the worker wait past its export timeout."""
    problems = []
    if config.get("connectors"):
        problems.append("connectors are not proven synchronous")
    pipeline = config["service"]["pipelines"]["metrics"]
    if pipeline["receivers"] != ["otlp"]:
        problems.append(f"receivers {pipeline['receivers']}: only otlp is proven")
    for name in pipeline.get("processors", []):
        if name.split("/")[0] not in SYNCHRONOUS_PROCESSORS:
            problems.append(f"processor {name} is not proven to answer after the exporter")
    for name in pipeline["exporters"]:
        if name.split("/")[0] not in EXPORTERS:
            problems.append(f"exporter {name} is not proven")
            continue
        exporter = config["exporters"][name] or {}
        if (exporter.get("sending_queue") or {}).get("enabled") is not False:
            problems.append(f"exporter {name} queues: it answers on acceptance")
        if "timeout" not in exporter:
            problems.append(f"exporter {name} has the default 30 s timeout")
            continue
        longest = seconds(exporter["timeout"])
        retry = exporter.get("retry_on_failure") or {}
        if retry.get("enabled", True):  # the factory's default is enabled, 5 minutes
            elapsed = seconds(retry.get("max_elapsed_time", "5m"))
            if elapsed == 0:
                problems.append(f"exporter {name} retries forever")
            longest += elapsed
        if longest > LONGEST_ANSWER_SECONDS:
            problems.append(
                f"exporter {name} may answer after {longest:g} s, past {LONGEST_ANSWER_SECONDS:g} s"
            )
    return problems


def shipped() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    return loaded


def test_the_collector_answers_the_worker_only_after_prometheus_answered_it() -> None:
    assert early_acknowledgers(shipped()) == []


def _with_batch(config: dict[str, Any]) -> None:
    config["processors"]["batch"] = {"timeout": "1s"}
    config["service"]["pipelines"]["metrics"]["processors"].append("batch")


def _with_default_queue(config: dict[str, Any]) -> None:
    del config["exporters"]["otlp_http/prometheus"]["sending_queue"]


def _with_default_retries(config: dict[str, Any]) -> None:
    del config["exporters"]["otlp_http/prometheus"]["retry_on_failure"]


def _retrying_forever(config: dict[str, Any]) -> None:
    config["exporters"]["otlp_http/prometheus"]["retry_on_failure"]["max_elapsed_time"] = "0s"


def _with_default_timeout(config: dict[str, Any]) -> None:
    del config["exporters"]["otlp_http/prometheus"]["timeout"]


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (_with_batch, "processor batch"),
        (_with_default_queue, "queues"),
        (_with_default_retries, "may answer after 302 s"),
        (_retrying_forever, "retries forever"),
        (_with_default_timeout, "default 30 s timeout"),
    ],
)
def test_a_stage_that_answers_early_or_late_is_found(change: Any, found: str) -> None:
    config = copy.deepcopy(shipped())
    change(config)
    problems = early_acknowledgers(config)
    assert len(problems) == 1, problems
    assert found in problems[0]
