"""The Kubernetes manifests, rendered with `kubectl kustomize` and checked offline.

No cluster runs here: every rendering is validated against the schemas of the Kubernetes
version the kind journey pins (`kubernetes-validate --strict`) and then held to the
policies users rely on. `tests/test_journeys.py` resolves the renderings as a cluster would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.manifests import (
    K8S,
    KUBERNETES_VERSION,
    RENDERINGS,
    containers,
    objects,
    one,
    pod_specs,
    readme_variables,
    services,
)
from tests.support import ROOT
from worker.settings import Settings


@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_every_rendering_validates_against_the_pinned_kubernetes(
    rendering: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(objects(rendering)))
    result = subprocess.run(
        [
            *(sys.executable, "-m", "kubernetes_validate"),
            *("-k", KUBERNETES_VERSION, "--strict", "--quiet", str(manifest)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    unknown = {o["kind"] for o in objects(rendering) if o["apiVersion"].startswith("keda.sh/")}
    problems = [line for line in result.stdout.splitlines() if line.startswith(("ERROR", "WARN"))]
    assert all(any(kind in p for kind in unknown) for p in problems), problems


@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_every_container_meets_the_restricted_pod_security_standard(rendering: str) -> None:
    for name, spec in pod_specs(rendering):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in containers(spec):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security.get("runAsNonRoot", pod["runAsNonRoot"]) is True, where
            assert int(security.get("runAsUser", pod["runAsUser"])) > 0, where
            assert "memory" in container["resources"]["limits"], where
            assert container["resources"]["requests"], where


@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_every_image_is_pinned_and_never_always_pulled(rendering: str) -> None:
    for name, spec in pod_specs(rendering):
        for container in containers(spec):
            image = container["image"]
            tag = image.rpartition(":")[2]
            assert ":" in image, f"{name}: {image}"
            assert tag != "latest", f"{name}: {image}"
            assert container.get("imagePullPolicy") != "Always", name


def test_the_base_leaves_the_replica_count_to_kubectl_scale() -> None:
    worker = one("base", "Deployment", "nps-worker")
    assert "replicas" not in worker["spec"]
    for rendering in ("overlays/kind", "overlays/aws"):
        assert "replicas" not in one(rendering, "Deployment", "nps-worker")["spec"]


def test_the_worker_pod_is_shaped_for_safe_scale_in() -> None:
    worker = one("base", "Deployment", "nps-worker")
    spec = worker["spec"]["template"]["spec"]
    settings = worker_settings("base")
    assert spec["terminationGracePeriodSeconds"] > settings.shutdown_budget_seconds
    [container] = spec["containers"]
    # Liveness gives up only after longer than a long poll plus the app's own margin.
    live = container["livenessProbe"]
    assert live["httpGet"]["path"] == "/healthz"
    assert live["periodSeconds"] * live["failureThreshold"] > settings.sqs_wait_time_seconds
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > (
        settings.sqs_wait_time_seconds + 10
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert port == settings.health_port
    [spread] = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    pdb = one("base", "PodDisruptionBudget", "nps-worker")
    assert pdb["spec"]["selector"] == worker["spec"]["selector"]
    assert one("base", "ServiceAccount", "nps-worker")["automountServiceAccountToken"] is False
    writable = {m["mountPath"] for m in container["volumeMounts"]}
    assert writable == {"/tmp"}


def worker_settings(rendering: str) -> Settings:
    """The settings a worker would load from the rendered ConfigMap (so they are valid)."""
    data = one(rendering, "ConfigMap", "nps-worker-config")["data"]
    return Settings.model_validate({key.lower(): value for key, value in data.items()})


def test_the_pod_name_travels_beside_the_instance_id_never_as_it() -> None:
    """A pod keeps its name when its container restarts: were it the instance id, the new
    process would count from zero in the old process's series (issue 22)."""
    [container] = one("base", "Deployment", "nps-worker")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    attributes = dict(
        pair.split("=", 1) for pair in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")
    )
    assert attributes == {
        "k8s.pod.name": "$(POD_NAME)",
        "k8s.namespace.name": "$(POD_NAMESPACE)",
    }
    # And the worker would accept them (it refuses an instance id given to it).
    Settings(otel_resource_attributes=env["OTEL_RESOURCE_ATTRIBUTES"]["value"])


@pytest.mark.parametrize("rendering", ["overlays/kind", "overlays/aws"])
def test_the_worker_gets_only_contract_variables(rendering: str) -> None:
    known = readme_variables()
    spec = one(rendering, "Deployment", "nps-worker")["spec"]["template"]["spec"]
    given: set[str] = set()
    for container in containers(spec):
        env = {e["name"]: e for e in container.get("env", [])}
        interpolated = set(re.findall(r"\$\((\w+)\)", " ".join(str(e) for e in env.values())))
        # Downward-API helpers exist only to be interpolated into a contract variable.
        given |= set(env) - {h for h in interpolated if "valueFrom" in env[h]}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            found = [o for o in objects(rendering) if o["metadata"]["name"] == ref["name"]]
            if not found:
                assert ref.get("optional"), ref
                continue
            [obj] = found
            given |= set(obj.get("data", {})) | set(obj.get("stringData", {}))
    assert given <= known | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, given - known
    assert worker_settings(rendering).sqs_queue_name


def test_the_kind_overlay_runs_the_local_image_without_pulling() -> None:
    for name in ("nps-worker", "nps-producer"):
        spec = one("overlays/kind", "Deployment", name)["spec"]["template"]["spec"]
        for container in containers(spec):
            assert container["image"] == "nps-worker:dev"
            assert container["imagePullPolicy"] == "IfNotPresent"
    cluster = yaml.safe_load((K8S / "overlays/kind/kind-cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster"
    grafana = one("overlays/kind", "Service", "grafana")
    [port] = grafana["spec"]["ports"]
    mappings = {m["containerPort"]: m["hostPort"] for m in cluster["nodes"][0]["extraPortMappings"]}
    assert mappings[port["nodePort"]] == 3000
    assert {"sqs", "otel-collector", "prometheus", "grafana"} <= {
        o["metadata"]["name"] for o in objects("overlays/kind", "Service")
    }


def test_the_aws_overlay_uses_irsa_and_a_queue_url_without_an_emulator() -> None:
    names = {o["metadata"]["name"] for o in objects("overlays/aws")}
    assert "sqs" not in names
    account = one("overlays/aws", "ServiceAccount", "nps-worker")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    data = one("overlays/aws", "ConfigMap", "nps-worker-config")["data"]
    assert data["SQS_QUEUE_URL"].startswith("https://sqs.")
    assert "AWS_ENDPOINT_URL_SQS" not in data


def test_keda_scales_the_worker_on_the_emulator_queue() -> None:
    scaled = one("base+keda", "ScaledObject", "nps-worker")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "nps-worker"
    assert spec["minReplicaCount"] >= 1
    [trigger] = spec["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    metadata = trigger["metadata"]
    queue = one("base+keda", "ConfigMap", "nps-worker-config")["data"]["SQS_QUEUE_NAME"]
    assert metadata["queueURL"].endswith("/" + queue)
    assert metadata["awsEndpoint"].startswith("http://sqs.")
    assert metadata["scaleOnInFlight"] == "true"
    assert int(metadata["queueLength"]) > 0
    auth = one("base+keda", "TriggerAuthentication", trigger["authenticationRef"]["name"])
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in one("base+keda", "Secret", ref["name"])["stringData"]


def test_observability_config_is_byte_identical_to_what_compose_mounts() -> None:
    mounted = {}
    for service in services().values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./observability/"):
                for path in sorted(Path(ROOT, source).rglob("*")) or [Path(ROOT, source)]:
                    if path.is_file():
                        mounted[path.name] = path.read_text()
    generated = {}
    for config_map in objects("base+observability", "ConfigMap"):
        generated.update(config_map.get("data", {}))
    for name, text in mounted.items():
        assert generated[name] == text, name
    assert set(mounted) <= set(generated)
    assert len(mounted) == 6


def test_keda_paces_scale_in_through_the_hpa_not_a_cooldown_that_never_applies() -> None:
    """KEDA applies cooldownPeriod only when scaling to zero or to idleReplicaCount
    (pkg/scaling/executor/scale_scaledobjects.go): with a minimum of 1 it would do nothing.
    The HPA's scale-down behaviour paces scale-in instead: one worker at a time, each given
    longer than its drain before the next leaves."""
    spec = one("base+keda", "ScaledObject", "nps-worker")["spec"]
    assert spec["minReplicaCount"] >= 1
    assert "idleReplicaCount" not in spec
    assert "cooldownPeriod" not in spec
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= spec["pollingInterval"]
    grace = one("base", "Deployment", "nps-worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert scale_down["policies"]
    for policy in scale_down["policies"]:
        assert (policy["type"], policy["value"]) == ("Pods", 1), policy
        assert policy["periodSeconds"] >= grace, policy
