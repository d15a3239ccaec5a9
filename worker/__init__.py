"""nps-worker: count and sum e-commerce events from SQS into OpenTelemetry metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nps-worker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
