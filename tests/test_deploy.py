"""The Kubernetes manifests in deploy/, rendered and checked offline (no cluster runs here).

- every kustomization renders with `kubectl kustomize`: the base, the cpu and gpu overlays, and
  each overlay with both components (models-pvc, servicemonitor) added, as a user's overlay would
- every rendered object validates against Kubernetes 1.32's schemas (`kubernetes-validate`,
  strict: unknown fields are errors); the ServiceMonitor, a CRD, against the Prometheus
  Operator's own types (`cloudcoil-models-prometheus-operator`, generated from its CRDs)
- the manifests agree with the code: probe paths are routes of the app and answer without an API
  key when keys are set; the ports are the settings' and the Dockerfiles'; the HPA's metric is
  one that service/metrics.py exports, through the prometheus-adapter rule that names it; the
  grace period covers the drain; the ConfigMap's keys are settings and its values parse; the
  images, user and model directory are the ones docker/ builds
- the hardening the issue asks for, object by object
kubectl absent: the rendering tests skip with that reason (`.ci/run` runs where it is installed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.32"
NAMESPACE = "ganserve"
POD_LABELS = {"app.kubernetes.io/name": "ganserve", "app.kubernetes.io/component": "api"}
COMPONENTS = ["components/models-pvc", "components/servicemonitor"]
# name -> (resource folder under deploy/, components added by a user's overlay)
RENDERINGS = {
    "base": ("base", []),
    "cpu": ("overlays/cpu", []),
    "gpu": ("overlays/gpu", []),
    "cpu+components": ("overlays/cpu", COMPONENTS),
    "gpu+components": ("overlays/gpu", COMPONENTS),
}
LOAD_MODELS_POD = DEPLOY / "components/models-pvc/load-models.yaml"
ADAPTER_VALUES = DEPLOY / "prometheus-adapter/values.yaml"


# --- rendering ---------------------------------------------------------------------------------


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the overlays (no cluster needed)")
    return found


def kustomize(folder: Path) -> list[dict]:
    proc = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {folder}: {proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Every rendering by name. A rendering with components is a user's overlay in a temporary
    folder (kustomize wants relative paths, so they are made relative to it)."""
    out = {}
    for name, (folder, components) in RENDERINGS.items():
        target = DEPLOY / folder
        if components:
            user = tmp_path_factory.mktemp(name.replace("+", "-"))
            kustomization = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": NAMESPACE,
                "resources": [os.path.relpath(DEPLOY / folder, user)],
                "components": [os.path.relpath(DEPLOY / c, user) for c in components],
            }
            (user / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
            target = user
        out[name] = kustomize(target)
    return out


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(docs: list[dict]) -> dict:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def config(docs: list[dict]) -> dict[str, str]:
    return one(docs, "ConfigMap")["data"]


def settings_fields() -> dict:
    from service.settings import Settings

    return Settings.model_fields


def setting(docs: list[dict], name: str):
    """A setting's value as the pods get it: the ConfigMap's, else the Settings default."""
    from service.settings import Settings

    env = config(docs)
    key = f"GANSERVE_{name.upper()}"
    return getattr(Settings(**{name: env[key]}), name) if key in env else settings_fields()[name].default


@pytest.mark.parametrize("name", RENDERINGS)
def test_renders_every_object(rendered, name):
    kinds = sorted(d["kind"] for d in rendered[name])
    expected = [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    if "components" in name:
        expected += ["PersistentVolumeClaim", "ServiceMonitor"]
    assert kinds == sorted(expected)
    for d in rendered[name]:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']} outside {NAMESPACE}"


# --- schemas ------------------------------------------------------------------------------------


CRDS = {"ServiceMonitor"}  # no Kubernetes schema: checked against its CRD's types below


@pytest.mark.parametrize("name", RENDERINGS)
def test_objects_validate_against_kubernetes_schema(rendered, name):
    import kubernetes_validate

    for d in rendered[name]:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert d["kind"] in CRDS, f"no Kubernetes {K8S_VERSION} schema for {d['kind']}"
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {d['kind']}/{d['metadata']['name']}: {exc}")


def test_load_models_pod_validates():
    import kubernetes_validate

    pod = yaml.safe_load(LOAD_MODELS_POD.read_text())
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert_hardened(pod["spec"], pod["spec"]["containers"][0])
    assert pod["spec"]["containers"][0]["image"] == compose_image("docker-compose.yml")
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ganserve-models"


def test_servicemonitor_validates_against_its_crd(rendered):
    types = pytest.importorskip(
        "cloudcoil.models.prometheus_operator.v1",
        reason="cloudcoil-models-prometheus-operator (the Prometheus Operator CRDs' types) is not installed",
    )
    doc = one(rendered["cpu+components"], "ServiceMonitor")
    model = types.ServiceMonitor.model_validate(doc)  # patterns and enums of the CRD's schema
    # the types ignore unknown fields: a round trip that loses a field means it is not in the CRD
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == doc


def test_crd_check_catches_a_wrong_field(rendered):
    """The round trip above is a real check: a misspelt field and a bad duration both fail it."""
    types = pytest.importorskip("cloudcoil.models.prometheus_operator.v1")
    doc = one(rendered["cpu+components"], "ServiceMonitor")
    misspelt = yaml.safe_load(yaml.safe_dump(doc))
    misspelt["spec"]["endpoints"][0]["intervall"] = "15s"
    model = types.ServiceMonitor.model_validate(misspelt)
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) != misspelt
    misspelt["spec"]["endpoints"][0] = {"port": "http", "interval": "15 seconds"}
    with pytest.raises(ValueError, match="interval"):
        types.ServiceMonitor.model_validate(misspelt)


# --- agreement with the code --------------------------------------------------------------------


def app_routes() -> dict[str, set[str]]:
    """Path -> methods, from the app's own OpenAPI document."""
    from service.app import create_app

    return {path: {m.upper() for m in ops} for path, ops in create_app().openapi()["paths"].items()}


def port_named(c: dict, name: str) -> int:
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == name]
    return port


@pytest.mark.parametrize("name", RENDERINGS)
def test_probes_and_ports_exist_in_the_app(rendered, name):
    docs = rendered[name]
    c = container(docs)
    routes = app_routes()
    probes = {p: c[p]["httpGet"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe, get in probes.items():
        assert "GET" in routes.get(get["path"], set()), f"{probe}: no GET {get['path']} in the app"
        assert port_named(c, get["port"]) == setting(docs, "port")
    # the pods answer on the port the settings bind, on every address
    assert port_named(c, "http") == setting(docs, "port")
    assert setting(docs, "host") == "0.0.0.0"
    service = one(docs, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    # the scrape: the metrics path is a route, open without a key
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "GET" in routes[annotations["prometheus.io/path"]]
    assert int(annotations["prometheus.io/port"]) == setting(docs, "port")
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
            assert "GET" in routes[endpoint["path"]]


def test_probes_answer_without_a_key_when_keys_are_set(rendered, make_settings):
    """The pods run with GANSERVE_API_KEYS from the Secret: the probe and scrape paths must stay
    open, or every pod fails its probes. The real app, with the ConfigMap's settings and a key."""
    from starlette.testclient import TestClient

    from service.app import create_app

    docs = rendered["cpu"]
    c = container(docs)
    env = {k[len("GANSERVE_") :].lower(): v for k, v in config(docs).items()}
    env.pop("models_dir", None)  # the image's models: here the test models
    paths = [c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")]
    paths.append(one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    with TestClient(create_app(make_settings(**env, api_keys="a-key"))) as client:
        for path in paths:
            assert client.get(path).status_code == 200, path
        assert client.get("/models").status_code == 401  # the key is really required elsewhere
        assert client.get("/models", headers={"X-API-Key": "a-key"}).status_code == 200


def exported_metric_names() -> set[str]:
    from prometheus_client.metrics import MetricWrapperBase

    from service import metrics

    names = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            names.update(family.name for family in obj.describe())
    return names


def adapter_rules() -> dict[str, dict]:
    """prometheus-adapter's rules by the metric name they serve."""
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    return {rule["name"]["as"]: rule for rule in values["rules"]["custom"]}


@pytest.mark.parametrize("name", RENDERINGS)
def test_hpa_scales_on_a_metric_the_service_exports(rendered, name):
    docs = rendered[name]
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(by_type) == {"Pods", "Resource"}
    # the per-pod load metric: served by an adapter rule whose series the service exports
    metric = by_type["Pods"]["pods"]["metric"]["name"]
    rule = adapter_rules()[metric]
    (series,) = re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"])
    assert series in exported_metric_names(), f"{series} is not in service/metrics.py"
    assert re.fullmatch(rule["name"]["matches"].strip("^$"), series)
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]
    # a queue-depth target under one batch: the pod is behind before its queue bound is near
    assert 0 < float(by_type["Pods"]["pods"]["target"]["averageValue"]) <= setting(docs, "max_batch_size")
    # CPU as the fallback needs a CPU request to take a utilisation of
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert container(docs)["resources"]["requests"]["cpu"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("name", RENDERINGS)
def test_grace_period_covers_the_drain(rendered, name):
    """After preStop, SIGTERM: uvicorn waits for open requests up to GANSERVE_DRAIN_TIMEOUT_S + 5 s
    (service/__main__.py, timeout_graceful_shutdown), then the lifespan drains the batcher queues
    for up to GANSERVE_DRAIN_TIMEOUT_S. The kubelet must not kill the pod before both end."""
    docs = rendered[name]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    pre_stop = container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = setting(docs, "drain_timeout_s")
    assert pod["terminationGracePeriodSeconds"] > pre_stop + (drain + 5) + drain


@pytest.mark.parametrize("name", RENDERINGS)
def test_configmap_holds_real_settings_and_no_secret(rendered, name, monkeypatch):
    from service.settings import Settings

    docs = rendered[name]
    env = config(docs)
    real = {f"GANSERVE_{field.upper()}" for field in settings_fields()}
    assert set(env) <= real, f"not settings: {sorted(set(env) - real)}"
    assert "GANSERVE_API_KEYS" not in env
    for key, value in env.items():  # every value parses as the service parses it
        monkeypatch.setenv(key, value)
    parsed = Settings()
    assert parsed.workers == 1  # one process per pod: /metrics is the whole pod's
    # the keys come from a Secret that no manifest contains
    assert not [d for d in docs if d["kind"] == "Secret"]
    c = container(docs)
    (keys,) = [e for e in c["env"] if e["name"] == "GANSERVE_API_KEYS"]
    assert keys["valueFrom"]["secretKeyRef"] == {"name": "ganserve-api-keys", "key": "api-keys"}
    assert [e["configMapRef"]["name"] for e in c["envFrom"]] == [one(docs, "ConfigMap")["metadata"]["name"]]
    assert all(e["name"] in real or not e["name"].startswith("GANSERVE_") for e in c["env"])


def compose_image(path: str) -> str:
    return yaml.safe_load((ROOT / path).read_text())["services"]["api"]["image"]


def dockerfile(name: str) -> str:
    return (ROOT / "docker" / name).read_text()


@pytest.mark.parametrize(
    ("name", "compose", "docker"),
    [
        ("cpu", "docker-compose.yml", "Dockerfile"),
        ("gpu", "docker/compose.gpu.yml", "Dockerfile.gpu"),
        ("cpu+components", "docker-compose.yml", "Dockerfile"),
        ("gpu+components", "docker/compose.gpu.yml", "Dockerfile.gpu"),
    ],
)
def test_images_match_docker(rendered, name, compose, docker):
    docs = rendered[name]
    c = container(docs)
    assert c["image"] == compose_image(compose)
    text = dockerfile(docker)
    uid = re.search(r"useradd .*--uid (\d+)", text).group(1)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert re.search(rf"^EXPOSE {port_named(c, 'http')}$", text, re.M)
    # models: the image's own (its default GANSERVE_MODELS_DIR), unless a volume is mounted
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    if "GANSERVE_MODELS_DIR" in config(docs):
        assert mounts[config(docs)["GANSERVE_MODELS_DIR"]]["readOnly"] is True


def test_models_pvc_component_mounts_the_claim(rendered):
    docs = rendered["gpu+components"]
    c = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    claim = one(docs, "PersistentVolumeClaim")
    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == str(setting(docs, "models_dir")) == "/models"
    assert "ReadWriteMany" in claim["spec"]["accessModes"] or "ReadOnlyMany" in claim["spec"]["accessModes"]


# --- hardening ----------------------------------------------------------------------------------


def assert_hardened(pod: dict, c: dict) -> None:
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", RENDERINGS)
def test_deployment_is_hardened(rendered, name):
    docs = rendered[name]
    deployment = one(docs, "Deployment")
    pod, c = deployment["spec"]["template"]["spec"], container(docs)
    assert_hardened(pod, c)
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert one(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # the only writable place is an emptyDir at /tmp, where Starlette spools multipart uploads over
    # 1 MiB; it holds every upload that may be in flight at once
    writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    (tmp,) = [v for v in pod["volumes"] if v["name"] == writable[0]["name"]]
    assert "emptyDir" in tmp
    limit = parse_quantity(tmp["emptyDir"]["sizeLimit"])
    assert limit >= setting(docs, "max_inflight_requests") * setting(docs, "max_upload_bytes")
    assert {"name": "ORT_DISABLE_TELEMETRY", "value": "1"} in c["env"]
    # spread over nodes; selectors all pick the pods
    assert deployment["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= POD_LABELS.items()
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys
    for t in pod["topologySpreadConstraints"]:
        assert t["labelSelector"]["matchLabels"] == POD_LABELS
    assert one(docs, "Service")["spec"]["selector"] == POD_LABELS
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == POD_LABELS


@pytest.mark.parametrize("name", RENDERINGS)
def test_networkpolicy_opens_only_the_http_port(rendered, name):
    docs = rendered[name]
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == POD_LABELS
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["egress"] == []  # the service calls nothing
    http = port_named(container(docs), "http")
    for rule in policy["ingress"]:
        assert rule["from"], "every ingress rule names its sources"
        for port in rule["ports"]:
            assert port["protocol"] == "TCP"
            assert port["port"] in ("http", http)


def test_gpu_overlay_one_gpu_per_pod(rendered):
    docs = rendered["gpu"]
    c = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert setting(docs, "provider") == "cuda"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    # a surge pod would wait for a spare GPU: roll one pod at a time
    assert one(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] >= 2
    # the CPU overlay gets neither
    cpu = container(rendered["cpu"])
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert setting(rendered["cpu"], "provider") == "cpu"
    assert "nodeSelector" not in one(rendered["cpu"], "Deployment")["spec"]["template"]["spec"]


def test_cpu_overlay_threads_fit_the_cpu_limit(rendered):
    """ONNX Runtime threads per pod stay within its CPU limit: os.cpu_count() sees the node's cores,
    so the solo session's default (0 = every core) would oversubscribe a pod."""
    docs = rendered["cpu"]
    cores = parse_quantity(container(docs)["resources"]["limits"]["cpu"])
    assert setting(docs, "intra_op_threads") * setting(docs, "inference_threads") <= cores
    assert 1 <= setting(docs, "solo_intra_op_threads") <= cores


def parse_quantity(q) -> float:
    """A Kubernetes quantity (`2`, `500m`, `2Gi`, `1G`) as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q)).groups()
    return float(number) * units.get(unit, 1)
