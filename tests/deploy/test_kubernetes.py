"""deploy/kubernetes/, checked without a cluster: every manifest against the Kubernetes JSON
schemas shipped by kubernetes-validate (strict: an unknown field fails), and the manifests against
each other, the gateway config in the ConfigMap (loaded with hapaxd's own loader) and the
Dockerfile: probe and Service ports, drain timing, the security context, and Secret references."""

from __future__ import annotations

import copy
import pathlib
import re
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from hapaxd import config

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
EXAMPLES = K8S / "examples"
DOCKERFILE = ROOT / "Dockerfile"

# The Kubernetes versions the manifests are validated against: the oldest they claim to support
# (native gRPC probes are GA since 1.27, autoscaling/v2 and policy/v1 since 1.23) and the newest
# whose schemas the installed kubernetes-validate ships.
OLDEST = "1.30"
NEWEST = ".".join(kubernetes_validate.latest_version().split(".")[:2])
VERSIONS = sorted({OLDEST, NEWEST})

# Seconds terminationGracePeriodSeconds must leave after the preStop sleep and the drain, for
# closing upstream connections and flushing the usage ledger.
MIN_MARGIN = 5.0

Doc = dict[str, Any]


def documents(path: pathlib.Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[pathlib.Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def resources(folder: pathlib.Path | None = None) -> list[Doc]:
    folder = K8S if folder is None else folder
    listed = documents(folder / "kustomization.yaml")[0]["resources"]
    return [doc for name in listed for doc in documents(folder / name)]


def find(kind: str, name: str, folder: pathlib.Path | None = None) -> Doc:
    folder = K8S if folder is None else folder
    found = [d for d in resources(folder) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in {folder.relative_to(ROOT)}"
    return found[0]


def deployment() -> Doc:
    return find("Deployment", "hapax")


def pod_spec() -> Doc:
    spec: Doc = deployment()["spec"]["template"]["spec"]
    return spec


def container() -> Doc:
    containers = pod_spec()["containers"]
    assert [c["name"] for c in containers] == ["hapax"]
    found: Doc = containers[0]
    return found


def container_port(name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    return int(ports[name])


def address_port(address: str) -> int:
    return int(address.rpartition(":")[2])


def secret_refs(spec: Doc) -> dict[str, dict[str, str]]:
    """Environment variable -> its secretKeyRef, over every container of a pod spec."""
    return {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for c in spec["containers"]
        for env in c.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }


def container_env() -> dict[str, str]:
    """The gateway container's environment as the kubelet would give it, with a fake value for
    each variable that comes from a Secret."""
    env = {}
    for entry in container()["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = f"fake-{entry['name'].lower()}"
    return env


def config_path() -> str:
    """The config file the gateway reads: --config in args, else HAPAX_CONFIG
    (hapaxd/__main__.py)."""
    args = [*container().get("command", []), *container().get("args", [])]
    if "--config" in args:
        return str(args[args.index("--config") + 1])
    return container_env()["HAPAX_CONFIG"]


def config_text() -> str:
    data = find("ConfigMap", "hapax-config")["data"]
    assert list(data) == ["hapax.yaml"]
    return str(data["hapax.yaml"])


@pytest.fixture
def settings(tmp_path: pathlib.Path) -> config.Settings:
    """The ConfigMap's hapax.yaml as the gateway loads it, with secrets checked: every variable
    it names must be in the Deployment's environment."""
    path = tmp_path / "hapax.yaml"
    path.write_text(config_text())
    return config.load(str(path), container_env())


def dockerfile_user() -> tuple[int, int]:
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", DOCKERFILE.read_text(), re.M)
    assert users, "the Dockerfile has no numeric USER line"
    uid, gid = users[-1]
    return int(uid), int(gid or uid)


def dockerfile_state_dir() -> str:
    found = re.findall(r"\bHAPAX_STATE_DIR=(\S+)", DOCKERFILE.read_text())
    assert found, "the Dockerfile sets no HAPAX_STATE_DIR"
    return str(found[-1])


def prestop_sleep(spec: Doc) -> float:
    """Seconds the preStop hook waits: `exec: sleep N` or the native `sleep: {seconds: N}`."""
    pre_stop = spec["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep") and len(command) == 2, command
    return float(command[1])


# --- (1) the schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "path", manifest_files(), ids=[p.relative_to(K8S).as_posix() for p in manifest_files()]
)
def test_every_manifest_validates_strictly(path: pathlib.Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path.name} holds no manifest"
    for doc in docs:
        # Raises ValidationError (or SchemaNotFoundError for an unknown kind or apiVersion).
        used = kubernetes_validate.validate(doc, version, strict=True)
        assert used == version, f"no schemas for {version}; validated against {used}"


def test_the_schemas_are_there_for_the_versions_named() -> None:
    shipped = {v.rpartition(".")[0] for v in kubernetes_validate.utils.all_versions()}
    assert set(VERSIONS) <= shipped


def test_the_strict_validator_rejects_a_misspelled_field_the_lax_one_lets_through() -> None:
    broken = copy.deepcopy(deployment())
    spec = broken["spec"]["template"]["spec"]["containers"][0]
    spec["readinesProbe"] = spec.pop("readinessProbe")
    kubernetes_validate.validate(broken, OLDEST, strict=False)  # unknown fields pass here
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, OLDEST, strict=True)


def test_the_validator_rejects_a_grpc_probe_on_a_named_port() -> None:
    # grpc.port is an int32 only (unlike httpGet and tcpSocket ports, which take a port's name).
    broken = copy.deepcopy(deployment())
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError, match="integer"):
        kubernetes_validate.validate(broken, OLDEST, strict=True)


@pytest.mark.parametrize("folder", [K8S, EXAMPLES], ids=["kubernetes", "examples"])
def test_each_kustomization_lists_every_manifest_of_its_folder(folder: pathlib.Path) -> None:
    kustomization = documents(folder / "kustomization.yaml")[0]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    here = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == here


def test_the_kustomization_image_is_the_deployments() -> None:
    images = documents(K8S / "kustomization.yaml")[0]["images"]
    image = container()["image"]
    assert [i["name"] for i in images] == [image.partition(":")[0]]
    assert container()["imagePullPolicy"] == "IfNotPresent"


# --- (2) probes and ports -----------------------------------------------------------------------


def test_startup_and_readiness_are_grpc_probes_on_the_configs_grpc_port(
    settings: config.Settings,
) -> None:
    grpc_port = address_port(settings.server.address)
    assert container_port("grpc") == grpc_port
    for probe in ("startupProbe", "readinessProbe"):
        spec = container()[probe]
        assert set(spec) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, probe
        assert spec["grpc"]["port"] == grpc_port, probe
        assert spec["grpc"].get("service", "") == "", probe  # the server's overall health
    assert settings.server.tls is None, "kubelet gRPC probes speak plaintext only"


def test_liveness_is_grpc_health_on_the_name_that_outlives_a_provider_outage(
    settings: config.Settings,
) -> None:
    # gRPC health "" goes NOT_SERVING when every provider is down; a liveness probe on it would
    # restart every pod during an upstream outage. "liveness" stays SERVING while the process
    # serves (app.py LIVENESS_SERVICE; tests/e2e/test_resilience.py checks it during an outage).
    from hapaxd.app import LIVENESS_SERVICE

    spec = container()["livenessProbe"]
    assert "httpGet" not in spec
    assert spec["grpc"]["port"] == address_port(settings.server.address) == container_port("grpc")
    assert spec["grpc"]["service"] == LIVENESS_SERVICE


@pytest.mark.parametrize("name", ["hapax", "hapax-headless"])
def test_services_target_the_container_ports(name: str, settings: config.Settings) -> None:
    service = find("Service", name)
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    wanted = {
        "grpc": address_port(settings.server.address),
        "metrics": address_port(settings.metrics.address),
    }
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == set(wanted)
    for port_name, number in wanted.items():
        target = ports[port_name].get("targetPort", ports[port_name]["port"])
        resolved = container_port(target) if isinstance(target, str) else target
        assert resolved == number == container_port(port_name), f"{name} {port_name}"


def test_one_service_has_a_virtual_ip_and_one_is_headless() -> None:
    assert find("Service", "hapax")["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert "clusterIP" not in find("Service", "hapax")["spec"]
    headless = find("Service", "hapax-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert not headless.get("publishNotReadyAddresses", False)  # draining pods leave DNS


# --- (3) the config -----------------------------------------------------------------------------


def test_the_configmap_is_mounted_where_the_gateway_reads_its_config() -> None:
    path = pathlib.PurePosixPath(config_path())
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = [m for m in container()["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert len(mounts) == 1, f"nothing mounted at {path.parent}"
    mount = mounts[0]
    # A directory mount, not subPath: only then does an edited ConfigMap reach the pod and
    # reload.watch reload it.
    assert "subPath" not in mount
    assert mount.get("readOnly") is True
    assert volumes[mount["name"]]["configMap"]["name"] == "hapax-config"
    assert path.name in find("ConfigMap", "hapax-config")["data"]


def test_the_configmap_holds_a_valid_gateway_config(settings: config.Settings) -> None:
    assert [p.name for p in settings.providers] == ["openai", "anthropic"]
    assert all(p.api_key.get_secret_value().startswith("fake-") for p in settings.providers)
    assert settings.auth.enabled and settings.auth.keys
    assert settings.reload.watch


def test_the_config_without_the_deployments_secrets_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "hapax.yaml"
    path.write_text(config_text())
    env = {k: v for k, v in container_env().items() if k not in secret_refs(pod_spec())}
    with pytest.raises(config.ConfigError, match="is not set"):
        config.load(str(path), env)


def test_redis_and_postgres_are_the_example_services(settings: config.Settings) -> None:
    assert settings.rate_limit.backend == "redis"
    assert settings.cache.backend == "redis"
    assert settings.ledger.enabled and settings.ledger.backend == "postgres"
    urls = {
        "hapax-redis": [settings.rate_limit.redis_url, settings.cache.redis_url],
        "hapax-postgres": [settings.ledger.postgres_url],
    }
    for service_name, used in urls.items():
        ports = {p["port"] for p in find("Service", service_name, EXAMPLES)["spec"]["ports"]}
        for url in used:
            parts = urlsplit(url)
            assert parts.hostname == service_name, url
            assert parts.port in ports, url
            assert parts.password is None, url
    statefulset = find("StatefulSet", "hapax-postgres", EXAMPLES)
    env = {
        e["name"]: e.get("value")
        for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    parts = urlsplit(settings.ledger.postgres_url)
    assert (parts.username, parts.path.lstrip("/")) == (env["POSTGRES_USER"], env["POSTGRES_DB"])


# --- (4) drain and rebalancing --------------------------------------------------------------------


def test_termination_grace_covers_the_prestop_sleep_and_the_drain(
    settings: config.Settings,
) -> None:
    sleep = prestop_sleep(container())
    assert sleep >= 1, "the preStop sleep lets endpoints go before SIGTERM"
    grace = settings.server.grace_period
    period = pod_spec()["terminationGracePeriodSeconds"]
    assert period >= sleep + grace + MIN_MARGIN, (
        f"terminationGracePeriodSeconds {period} < preStop {sleep:g} + "
        f"server.grace_period {grace:g} + margin {MIN_MARGIN:g}"
    )
    # The comment that shows the arithmetic names the same numbers.
    text = (K8S / "deployment.yaml").read_text()
    assert f"{sleep:g} s (preStop sleep) + {grace:g} s (server.grace_period" in text
    assert f"= {period} s" in text


def test_old_connections_are_closed_so_clients_rebalance(settings: config.Settings) -> None:
    age = settings.server.max_connection_age
    assert age is not None and 0 < age <= 600
    assert "max_connection_age:" in config_text()  # set here, not the 30-minute default
    strategy = deployment()["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_the_autoscaler_owns_the_replica_count_and_disruptions_are_bounded() -> None:
    assert "replicas" not in deployment()["spec"]
    hpa = find("HorizontalPodAutoscaler", "hapax")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "hapax")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert "cpu" in container()["resources"]["requests"]  # what utilization is measured against
    assert set(container()["resources"]) == {"requests", "limits"}
    pdb = find("PodDisruptionBudget", "hapax")
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["selector"] == deployment()["spec"]["selector"]


# --- (5) security context -----------------------------------------------------------------------


def test_the_pod_runs_as_the_dockerfiles_user_on_a_read_only_root() -> None:
    uid, gid = dockerfile_user()
    assert uid == 10001
    pod = pod_spec()["securityContext"]
    box = container()["securityContext"]
    assert pod["runAsNonRoot"] is True and box["runAsNonRoot"] is True
    assert pod["runAsUser"] == box["runAsUser"] == uid
    assert pod["runAsGroup"] == box["runAsGroup"] == gid
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]
    assert "add" not in box["capabilities"]
    assert not box.get("privileged", False)
    assert pod_spec()["automountServiceAccountToken"] is False


def test_the_writable_paths_are_empty_dirs() -> None:
    state_dir = dockerfile_state_dir()
    assert container_env()["HAPAX_STATE_DIR"] == state_dir
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    for path in ("/tmp", state_dir):
        assert path in mounts, f"nothing writable at {path}"
        assert not mounts[path].get("readOnly", False)
        assert "emptyDir" in volumes[mounts[path]["name"]], path


def test_service_links_are_off() -> None:
    # Otherwise the Service named hapax puts HAPAX_PORT=tcp://... in the environment, which a
    # config's ${HAPAX_PORT:-50051} (config/hapax.example.yaml) would expand.
    assert pod_spec()["enableServiceLinks"] is False


# --- (6) secrets --------------------------------------------------------------------------------


def test_every_secret_reference_is_an_env_var_the_config_uses(settings: config.Settings) -> None:
    used = {env for _, env in settings.secret_env()}
    refs = secret_refs(pod_spec())
    assert refs, "no secret reaches the gateway"
    assert set(refs) == used, "the Deployment's secret env and the config's *_env names differ"
    secret = find("Secret", "hapax-secrets")
    for name, ref in refs.items():
        assert ref["name"] == "hapax-secrets", name
        assert ref["key"] in secret["stringData"], name
        assert not ref.get("optional", False), name


def test_the_example_services_read_their_passwords_from_the_same_secret(
    settings: config.Settings,
) -> None:
    secret = find("Secret", "hapax-secrets")
    wanted = {
        ("Deployment", "hapax-redis"): settings.rate_limit.redis_password_env,
        ("StatefulSet", "hapax-postgres"): settings.ledger.postgres_password_env,
    }
    for (kind, name), env in wanted.items():
        refs = secret_refs(find(kind, name, EXAMPLES)["spec"]["template"]["spec"])
        assert refs, name
        for ref in refs.values():
            assert ref["name"] == "hapax-secrets" and ref["key"] in secret["stringData"]
        assert refs[env]["key"] == env, name
