"""The environment a benchmarked `nps-worker` runs in: this process's, less every setting
of ours, pointed at the benchmark's SQS and OTLP receiver."""

from __future__ import annotations

import os

_OURS = ("OTEL_", "SQS_", "AWS_", "WORKER_", "BENCH_", "DLQ_")


def worker_environment(sqs_endpoint: str, otlp_endpoint: str, **settings: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_OURS)} | {
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "HEALTH_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        **settings,
    }
