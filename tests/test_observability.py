"""The container, compose and observability files, checked offline.

No Docker engine, Collector or Grafana runs here: the compose file is validated
against the Compose specification, the Collector and Grafana files structurally,
and every PromQL expression (alerts and dashboard panels) by promtool, evaluated
over series named exactly as Prometheus's OTLP endpoint names the worker's metrics.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.local_http import LocalHTTPServer, QuietHandler
from tests.manifests import readme_variables, services
from tests.promtool import prometheus_server, promtool
from tests.support import ROOT, free_port, run_cli
from worker import cli
from worker.settings import Settings

OBSERVABILITY = ROOT / "observability"
COLLECTOR_CONFIG = OBSERVABILITY / "otel-collector" / "config.yaml"
PROMETHEUS = OBSERVABILITY / "prometheus"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "nps-events.json"


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


# Compose


def test_compose_file_validates_against_the_compose_specification() -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "check_jsonschema"),
            *("--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_image_is_pinned_to_a_version() -> None:
    images = [s["image"] for s in services().values()]
    dockerfile = (ROOT / "Dockerfile").read_text()
    images += re.findall(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, re.MULTILINE)
    images += [i for i in re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) if "$" not in i]
    assert len(images) >= 8
    for image in images:
        if image == "nps-worker:dev":  # built here from this checkout
            continue
        name, _, tag = image.rpartition(":")
        assert name, image
        assert tag not in {"", "latest"}, image
        assert re.search(r"\d+\.\d+", tag), f"{image} is not pinned to a version"


def test_the_stack_has_every_part_the_design_names() -> None:
    assert set(services()) == {
        "sqs",
        "provision",
        "producer",
        "worker",
        "otel-collector",
        "prometheus",
        "grafana",
    }
    assert services()["producer"]["command"][:2] == ["produce", "--forever"]
    assert services()["provision"]["command"] == ["provision"]


def test_the_worker_can_be_scaled() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker  # N replicas cannot share a host port
    assert "deploy" not in worker or "replicas" not in worker["deploy"]


def test_every_service_others_wait_on_is_healthy_or_finished_first() -> None:
    for name, service in services().items():
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            assert condition in {"service_healthy", "service_completed_successfully"}, name
            if condition == "service_healthy":
                assert "healthcheck" in services()[dependency], f"{name} waits on {dependency}"
    assert "HEALTHCHECK" in (ROOT / "Dockerfile").read_text()


def test_the_worker_gets_only_contract_variables() -> None:
    known = readme_variables()
    assert {"SQS_QUEUE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "AWS_ENDPOINT_URL_SQS"} <= known
    for name in ("provision", "producer", "worker"):
        given = set(services()[name]["environment"])
        assert given <= known | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, given - known


def test_every_setting_is_in_the_readme_table() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    settings -= {"AWS_REGION"}  # read as AWS_REGION or AWS_DEFAULT_REGION
    assert settings <= readme_variables()


def test_stop_grace_period_is_longer_than_the_shutdown_budget() -> None:
    grace = seconds(services()["worker"]["stop_grace_period"])
    assert grace > Settings().shutdown_budget_seconds


def test_the_image_runs_as_a_numeric_non_root_user_with_the_locked_runtime_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)[-1]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert "--frozen --no-dev" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # deny by default, then allow what the build copies
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        for path in copied.split():
            assert f"!{path.rstrip('/')}" in {line.rstrip("/") for line in ignored}, path


# Collector


def test_collector_pipelines_use_only_components_it_defines() -> None:
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            assert pipeline[kind], (name, kind)
            assert set(pipeline[kind]) <= set(config[kind]), (name, kind)
    metrics = service["pipelines"]["metrics"]
    assert metrics["processors"][0] == "memory_limiter"  # first, or it protects nothing
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}


def test_collector_exports_to_prometheus_where_compose_runs_it() -> None:
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    [exporter] = config["service"]["pipelines"]["metrics"]["exporters"]
    # `otlp_http`, not the alias `otlphttp` that 0.144+ warns about at every start.
    assert exporter.split("/")[0] == "otlp_http"
    endpoint = config["exporters"][exporter]["metrics_endpoint"]
    assert endpoint == "http://prometheus:9090/api/v1/otlp/v1/metrics"
    prometheus = services()["prometheus"]
    assert "--web.enable-otlp-receiver" in prometheus["command"]
    collector = services()["otel-collector"]
    mounted = collector["volumes"][0].split(":")
    assert Path(ROOT, mounted[0]).resolve() == COLLECTOR_CONFIG
    assert collector["command"] == [f"--config={mounted[1]}"]
    worker_endpoint = services()["worker"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert worker_endpoint == "http://otel-collector:4318"


# Prometheus


def test_prometheus_turns_each_counter_start_into_a_zero_sample() -> None:
    """Without it a new series' first sample is already its first burst, which rate() and
    increase() never see: a new process's first export would be lost to every panel."""
    from tests.manifests import one

    flag = "--enable-feature=created-timestamp-zero-ingestion"
    assert flag in services()["prometheus"]["command"]
    deployment = one("base+observability", "Deployment", "prometheus")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert flag in container["args"]


def test_prometheus_promotes_the_instance_and_service_to_labels() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    promoted = config["otlp"]["promote_resource_attributes"]
    assert {"service.instance.id", "service.name"} <= set(promoted)


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # Debian's promtool is 2.42: it predates the `otlp` section and the TSDB `retention`
    # block (Prometheus 3), which the test above and tests/test_versions.py check;
    # everything else is checked by promtool itself.
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    del config["otlp"]
    del config["storage"]["tsdb"]["retention"]
    config["rule_files"] = [str(PROMETHEUS / "rules" / "*.yml")]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(checked))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 rules found" in result.stdout


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", "tests/nps-alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((PROMETHEUS / "rules" / "nps-alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = (PROMETHEUS / "tests" / "nps-alerts.test.yml").read_text()
    for alert in alerts:  # every rule has at least one case that fires
        assert re.search(rf"alertname: {alert}\n\s+eval_time: \S+\n\s+exp_alerts:\n", tests), alert


# Grafana


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def fill(expr: str, instance: str = ".*") -> str:
    """A panel's PromQL as Grafana sends it, its variables filled in."""
    values = {
        "$__rate_interval": "5m",
        "$__range": "1h",
        "$event_type": ".*",
        "$instance": instance,
    }
    for variable, value in values.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr.replace('"$1"', ""), expr  # $1: label_replace's, not Grafana's
    return expr


def panel_queries(instance: str = ".*") -> dict[str, str]:
    """`panel_<id>_<refId>` -> the panel's PromQL with Grafana's variables filled in."""
    return {
        f"panel_{panel['id']}_{target['refId']}": fill(target["expr"], instance)
        for panel in dashboard()["panels"]
        for target in panel["targets"]
    }


def instance_variable_query() -> str:
    [variable] = [v for v in dashboard()["templating"]["list"] if v["name"] == "instance"]
    query = str(variable["query"]["query"])
    assert query.startswith("query_result(")
    assert query.endswith(")")
    assert variable["regex"] == '/worker="([^"]+)"/'  # the label the panels group by
    return fill(query.removeprefix("query_result(").removesuffix(")"))


# Three processes: "a" ran for 30 minutes and ended; "b" runs throughout; "c" started
# at 35 minutes (a restart: a new instance id, its counters from zero). One sample a minute.
# On Kubernetes, "c" is "a"'s container restarted in its pod: the same k8s_pod_name.
PODS = {"a": "nps-worker-1", "b": "nps-worker-2", "c": "nps-worker-1"}
DASHBOARD_SERIES = {
    'nps_events_total{event_type="purchase", service_instance_id="a"}': "0+2x30",
    'nps_events_total{event_type="purchase", service_instance_id="b"}': "0+1x60",
    'nps_events_total{event_type="purchase", service_instance_id="c"}': "_x35 0+1x25",
    'nps_events_total{event_type="pageview", service_instance_id="b"}': "0+3x60",
    'nps_event_value_total{event_type="purchase", service_instance_id="a"}': "0+5x30",
    'nps_event_value_total{event_type="purchase", service_instance_id="b"}': "0+2.5x60",
    'nps_event_value_total{event_type="purchase", service_instance_id="c"}': "_x35 0+10x25",
    'nps_event_value_total{event_type="pageview", service_instance_id="b"}': "0+3x60",
    'nps_events_rejected_total{reason="malformed_json", service_instance_id="b"}': "0+1x60",
    'nps_event_lag_seconds_bucket{event_type="purchase", le="1", service_instance_id="b"}': (
        "0+6x60"
    ),
    'nps_event_lag_seconds_bucket{event_type="purchase", le="5", service_instance_id="b"}': (
        "0+10x60"
    ),
    'nps_event_lag_seconds_bucket{event_type="purchase", le="+Inf", service_instance_id="b"}': (
        "0+10x60"
    ),
    'nps_queue_messages{queue="main", state="visible", service_instance_id="a"}': "40x30",
    'nps_queue_messages{queue="main", state="visible", service_instance_id="b"}': "40x60",
    'nps_queue_messages{queue="main", state="visible", service_instance_id="c"}': "_x35 42x25",
    'nps_queue_messages{queue="dlq", state="visible", service_instance_id="b"}': "7x60",
    'nps_queue_messages{queue="dlq", state="visible", service_instance_id="c"}': "_x35 7x25",
    'messaging_client_consumed_messages_total{service_instance_id="b"}': "0+4x60",
    'messaging_client_consumed_messages_total{service_instance_id="c"}': "_x35 0+2x25",
}

# At minute 60, per panel query: {labels: value}. The totals table must be exact:
# purchase = 60 (a, ended) + 60 (b) + 25 (c, restarted) = 145.
DASHBOARD_EXPECTED: dict[str, dict[str, float]] = {
    "panel_1_A": {"{}": 2},  # a has been silent for 30 minutes
    "panel_2_A": {'{queue="main", state="visible"}': 42, '{queue="dlq", state="visible"}': 7},
    "panel_3_A": {'{event_type="purchase"}': 145, '{event_type="pageview"}': 180},
    "panel_3_B": {'{event_type="purchase"}': 550, '{event_type="pageview"}': 180},
    "panel_4_A": {'{event_type="purchase"}': 2 / 60, '{event_type="pageview"}': 3 / 60},
    "panel_5_A": {'{event_type="purchase"}': 12.5 / 60, '{event_type="pageview"}': 3 / 60},
    "panel_6_A": {'{reason="malformed_json"}': 1 / 60},
    "panel_7_A": {'{event_type="purchase"}': 0.5 * 10 / 6},  # p50 inside (0, 1]
    "panel_7_B": {'{event_type="purchase"}': 4.5},  # p95 inside (1, 5]
}


def fleet_expected(fleet: str) -> dict[str, dict[str, float]]:
    """What differs between a Kubernetes fleet (pods named) and any other (processes)."""
    worker = PODS if fleet == "kubernetes" else {i: i for i in PODS}
    chosen = "nps-worker-1" if fleet == "kubernetes" else "a|c"  # a and its restart
    per_worker = {
        "kubernetes": {"nps-worker-1": 3, "nps-worker-2": 2},  # series seen in the range
        "compose": {"a": 1, "b": 2, "c": 2},
    }[fleet]
    return DASHBOARD_EXPECTED | {
        # Per worker: on Kubernetes the pod, whichever process it runs.
        "panel_8_A": {
            f'{{worker="{worker["b"]}"}}': 4 / 60,
            f'{{worker="{worker["c"]}"}}': 2 / 60,
        },
        # The Instance variable set to the first pod (Kubernetes), or to a and c: both
        # lives of that pod, exact.
        f"chosen_{chosen}_panel_3_A": {'{event_type="purchase"}': 60 + 25},
        f"chosen_{chosen}_panel_3_B": {'{event_type="purchase"}': 150 + 250},
        "instance_values": {f'{{worker="{w}"}}': n for w, n in per_worker.items()},
    }


GRID = 2**20


@pytest.mark.parametrize("fleet", ["kubernetes", "compose"])
def test_every_dashboard_query_evaluates_to_the_expected_values(tmp_path: Path, fleet: str) -> None:
    expected = fleet_expected(fleet)
    queries = panel_queries() | {"instance_values": instance_variable_query()}
    for name in [n for n in expected if n.startswith("chosen_")]:
        chosen, panel = name.removeprefix("chosen_").split("_panel_")
        queries[name] = panel_queries(chosen)[f"panel_{panel}"]
    assert set(queries) == set(expected)
    # Rounded to a power of two, which is exact in binary: promtool compares floats
    # exactly, and rate arithmetic may differ from ours in the last bit. Recording rule
    # names must be metric names.
    record = {name: re.sub(r"\W", "_", name) for name in queries}
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": record[n], "expr": f"round({e}, 1 / {GRID})"}
                    for n, e in queries.items()
                ],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    common = 'job="nps-worker", service_name="nps-worker", '
    cases = [
        {
            "expr": record[name],
            "eval_time": "60m",
            "exp_samples": [
                {
                    "labels": f"{record[name]}{labels}",
                    "value": math.floor(value * GRID + 0.5) / GRID,
                }
                for labels, value in expected[name].items()
            ],
        }
        for name in queries
    ]

    def labelled(series: str) -> str:
        instance = re.findall(r'service_instance_id="(\w)"', series)[0]
        pod = f'k8s_pod_name="{PODS[instance]}", ' if fleet == "kubernetes" else ""
        return series.replace("{", "{" + common + pod, 1)

    test = {
        "rule_files": ["panels.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": labelled(series), "values": values}
                    for series, values in DASHBOARD_SERIES.items()
                ],
                "promql_expr_test": cases,
            }
        ],
    }
    (tmp_path / "panels.test.yml").write_text(yaml.safe_dump(test, width=1000))
    result = promtool("test", "rules", "panels.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_has_the_panels_and_variables_users_need() -> None:
    board = dashboard()
    titles = {panel["title"] for panel in board["panels"]}
    assert titles == {
        "Live worker instances",
        "Backlog and DLQ depth",
        "Totals by type, every process seen in the range",
        "Events per second by type",
        "Value per second by type",
        "Rejected per second by reason",
        "Lag p50 / p95 by type",
        "Throughput per instance",
    }
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"event_type", "instance"}
    uses = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    assert "$event_type" in uses
    assert "$instance" in uses
    datasources = {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    provisioned = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    assert datasources == {d["uid"] for d in provisioned["datasources"]}
    [totals] = [p for p in board["panels"] if p["type"] == "table"]
    assert all("max_over_time" in t["expr"] for t in totals["targets"])


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    providers = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/dashboards/nps.yaml").read_text()
    )["providers"]
    mounts = dict(v.split(":")[:2] for v in services()["grafana"]["volumes"])
    dashboards_dir = mounts["./observability/grafana/dashboards"]
    assert [p["options"]["path"] for p in providers] == [dashboards_dir]
    env = services()["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# nps-worker stats against a real Prometheus


def openmetrics(now: float) -> str:
    """Two processes, one restarted as a third; samples every 15 s for 40 minutes."""
    start = int(now) - 45 * 60
    processes = {  # instance: (first minute, last minute, purchases and pageviews a minute)
        "a": (0, 20, 2, 1),
        "b": (0, 40, 1, 3),
        "c": (25, 40, 4, 0),
    }
    # OpenMetrics wants each family's samples together, each series in time order.
    counts, sums = ["# TYPE nps_events counter"], ["# TYPE nps_event_value counter"]
    for instance, (first, last, purchases, pageviews) in processes.items():
        for kind, rate, value in (("purchase", purchases, 2.5), ("pageview", pageviews, 1)):
            if not rate:
                continue
            labels = f'event_type="{kind}",service_instance_id="{instance}"'
            for step in range(first * 4, last * 4 + 1):
                count = int((step / 4 - first) * rate)
                at = start + step * 15
                counts.append(f"nps_events_total{{{labels}}} {count} {at}")
                sums.append(f"nps_event_value_total{{{labels}}} {count * value} {at}")
    return "\n".join(counts + sums) + "\n# EOF\n"


def test_stats_prints_exact_fleet_totals_from_prometheus(tmp_path: Path) -> None:
    with prometheus_server(openmetrics(time.time()), tmp_path, free_port()) as url:
        result = run_cli("stats", "--prometheus", url, "--since", "2h", env={})
    assert result.returncode == 0, result.stderr
    # purchase: a 20 min x 2 + b 40 x 1 + c 15 x 4 = 140; pageview: a 20 + b 120 = 140
    assert result.stdout.splitlines() == [
        '{"type": "pageview", "count": 140, "sum": 140.0}',
        '{"type": "purchase", "count": 140, "sum": 350.0}',
    ]


def test_stats_says_when_prometheus_has_no_data_or_is_unreachable(tmp_path: Path) -> None:
    port = free_port()
    empty = "# TYPE other counter\nother_total 1 1\n# EOF\n"
    with prometheus_server(empty, tmp_path, port) as url:
        no_data = run_cli("stats", "--prometheus", url, "--since", "1h", env={})
    assert no_data.returncode == 2
    assert no_data.stderr.strip() == (
        f"nps-worker: Prometheus at {url} has no nps_events_total samples in the last 1h"
    )
    down = run_cli("stats", "--prometheus", f"http://127.0.0.1:{port}", env={})
    assert down.returncode == 2
    assert len(down.stderr.strip().splitlines()) == 1
    assert "is unreachable" in down.stderr


@pytest.mark.parametrize("since", ["yesterday", "5", "1h30"])
def test_stats_refuses_a_range_that_is_not_a_duration(since: str) -> None:
    result = run_cli("stats", "--since", since, env={})
    assert result.returncode == 2
    assert "is not a duration" in result.stderr


class HostileServer:
    """Answers every GET the way `behaviour` says: wrongly shaped, slow, or endless."""

    def __init__(self, behaviour: str) -> None:
        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if behaviour == "shape":
                    body = b'{"status": "success", "data": {"result": [{"value": "x"}]}}'
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Content-Length", str(400 * 2**20))
                self.end_headers()
                with contextlib.suppress(OSError):
                    if behaviour == "slow":
                        for _ in range(60):  # a byte a second: no single read times out
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(1)
                    else:
                        chunk = b" " * 2**20
                        for _ in range(400):
                            self.wfile.write(chunk)

        self._server = LocalHTTPServer(Handler)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        ("shape", "did not answer like Prometheus"),
        # Waits out the whole 10 s deadline: in the soak suite, for the default's time.
        pytest.param("slow", "did not answer within 10 s", marks=pytest.mark.soak),
        ("endless", "sent more than 16 MiB"),
    ],
)
def test_stats_against_a_server_that_is_not_prometheus_is_one_line(
    behaviour: str, says: str
) -> None:
    server = HostileServer(behaviour)
    try:
        result = run_cli("stats", "--prometheus", server.url, env={}, timeout=60)
    finally:
        server.close()
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert says in result.stderr


class AnsweringPrometheus:
    """Answers each instant query as `answer(query, time)` says, in Prometheus's JSON;
    `time` is the evaluation time the query asked for (None: Prometheus's own now)."""

    def __init__(self, answer: Any) -> None:
        class Handler(QuietHandler):
            def do_GET(self) -> None:
                asked = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                at = asked.get("time")
                rows = answer(asked["query"][0], float(at[0]) if at else None)
                self.send_json(
                    {"status": "success", "data": {"resultType": "vector", "result": rows}}
                )

        self._server = LocalHTTPServer(Handler)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()


def stats_against(
    answer: Any, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str], list[str]]:
    """`nps-worker stats` (in this process) against a Prometheus answering `answer`."""
    server = AnsweringPrometheus(answer)
    try:
        code = cli.main(["stats", "--prometheus", server.url])
    finally:
        server.close()
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def row(value: object, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1795968000, value]}


@pytest.mark.parametrize(
    ("counts", "sums", "says"),
    [
        ([row("NaN", event_type="a")], [row("1", event_type="a")], "'NaN' events of type 'a'"),
        ([row("+Inf", event_type="a")], [row("1", event_type="a")], "'+Inf' events"),
        ([row("abc", event_type="a")], [row("1", event_type="a")], "'abc' events"),
        ([row("2.5", event_type="a")], [row("1", event_type="a")], "'2.5' events"),
        ([row("-2", event_type="a")], [row("1", event_type="a")], "'-2' events"),
        ([row("2", event_type="a")], [row("NaN", event_type="a")], "a sum of 'NaN'"),
        ([row("2")], [row("1")], "a series without an event_type"),
        (
            [row("2", event_type="a"), row("3", event_type="a")],
            [row("1", event_type="a")],
            "type 'a' twice",
        ),
        ([row("2", event_type="a")], [], "no sum for type 'a'"),
    ],
)
def test_stats_refuses_an_answer_that_is_not_a_total_in_one_line(
    counts: list[dict[str, Any]],
    sums: list[dict[str, Any]],
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: NaN, infinity or a value that is not a number was a traceback; a fraction,
    a negative count, a series without its label or a type listed twice was printed."""
    code, out, err = stats_against(
        lambda query, at: counts if "nps_events_total" in query else sums, capsys
    )
    assert (code, out) == (2, [])
    [line] = err
    assert line.startswith("nps-worker: Prometheus at http://127.0.0.1:")
    assert says in line


def test_stats_reads_counts_and_sums_at_one_instant(capsys: pytest.CaptureFixture[str]) -> None:
    """Each event is worth 2.5: counts and sums read at two instants disagree while a
    worker exports between the two queries (before: a count of 1 beside a sum of 5.0)."""
    answered = 0

    def moving(query: str, at: float | None) -> list[dict[str, Any]]:
        nonlocal answered
        answered += 1
        events = answered if at is None else int(at) % 1000  # Prometheus's now moves on
        value = events if "nps_events_total" in query else events * 2.5
        return [row(str(value), event_type="purchase")]

    code, out, err = stats_against(moving, capsys)
    assert code == 0, err
    [line] = out
    summary = json.loads(line)
    assert summary["sum"] == summary["count"] * 2.5, summary
