"""Python SQS consumer frameworks from PyPI, each written as its own documentation shows,
doing the job's count and sum per event type. They are a uv project of their own
(`pyproject.toml` and `uv.lock` here): `uv sync --project benchmarks/peers` installs them.

Each reads its SQS endpoint and queue from BENCH_ENDPOINT and BENCH_QUEUE (the benchmark
sets them) and consumes until stopped.
"""
