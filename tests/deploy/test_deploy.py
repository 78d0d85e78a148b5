"""Checks the Kubernetes manifests, the Helm chart, the dashboard and the
alerting rules with real tools, and keeps them in step with each other and
with the code (run by tests/run.sh through pytest)."""
import json
import pathlib
import re
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
CHART = ROOT / "helm" / "feishu-kafka-bridge"
KUBE_VERSION = "1.30.0"
CRDS = {"ServiceMonitor"}


def manifests():
    """The kustomization's resources (the Secret is not one: see examples/)."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def examples():
    """Applied on their own: the Secret's template and the snapshot CronJob."""
    return sorted((K8S / "examples").glob("*.yaml")) + sorted((K8S / "snapshot").glob("*.yaml"))


def load(path):
    return yaml.safe_load(path.read_text())


def env_names_in_code():
    text = "".join(p.read_text() for p in sorted((ROOT / "src" / "config").glob("*.rs")))
    return set(re.findall(r'env = "([A-Z_]+)"', text))


def metric_names_in_code():
    """Metric names the bridge exports (with histogram series suffixes)."""
    src = ROOT / "src"
    files = {p for p in src.rglob("*.rs") if p.name == "metrics.rs" or (src / "metrics") in p.parents}
    text = "".join(p.read_text() for p in sorted(files))
    assert "Registry" in text, "the metrics module moved: update this test"
    names = set()
    for kind, name in re.findall(r'(IntCounterVec|IntGaugeVec|IntGauge|GaugeVec|Gauge|HistogramVec|Histogram|HistogramOpts|Opts)::(?:new|with_opts)\(\s*(?:Opts::new\(|HistogramOpts::new\()?\s*"([a-z_]+)"', text):
        names.add("feishu_bridge_" + name)
    for name in list(names):
        if name.endswith("_seconds"):
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


@pytest.mark.parametrize("path", manifests() + examples(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path):
    doc = load(path)
    if doc["kind"] in CRDS:
        pytest.skip("custom resource: checked by test_servicemonitor_selects_the_service")
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_no_secret():
    """README says: create the Secret with kubectl, then `kubectl apply -k`.
    A Secret in the kustomization would replace the real keys with its
    placeholders on every apply (every callback 401)."""
    listed = set(load(K8S / "kustomization.yaml")["resources"])
    assert listed == {p.name for p in manifests()}
    assert all(load(K8S / name)["kind"] != "Secret" for name in listed)


def test_servicemonitor_selects_the_service():
    sm, svc = load(K8S / "servicemonitor.yaml"), load(K8S / "service.yaml")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    ports = {p["name"] for p in svc["spec"]["ports"]}
    # Scraped on the admin port: the callback port serves the callback path only.
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["admin"] and {"http", "admin"} <= ports
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


def test_deployment_is_hardened_and_drains():
    dep = load(K8S / "deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert dep["spec"]["replicas"] >= 2
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["runAsNonRoot"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    cm = load(K8S / "configmap.yaml")["data"]
    drain = int(cm["BRIDGE_DRAIN_TIMEOUT_SECS"]) + int(cm["BRIDGE_FLUSH_TIMEOUT_SECS"])
    assert pod["terminationGracePeriodSeconds"] > c["lifecycle"]["preStop"]["sleep"]["seconds"] + drain


def test_manifest_env_names_exist_in_the_code():
    known = env_names_in_code()
    cm = set(load(K8S / "configmap.yaml")["data"])
    (c,) = load(K8S / "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    env = {e["name"] for e in c["env"]}
    assert cm | env <= known, (cm | env) - known
    chart_env = set(re.findall(r"\b((?:BRIDGE|KAFKA|FEISHU)_[A-Z_]+)\b", "".join(p.read_text() for p in (CHART / "templates").glob("*.yaml"))))
    assert chart_env <= known, chart_env - known


def test_values_match_their_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = load(CHART / "values.yaml")
    jsonschema.validate(values, schema)
    # The schema bites: a deadline past Feishu's 3 s and an unknown key are refused.
    bad = json.loads(json.dumps(values))
    bad["config"]["publishDeadlineMs"] = 5000
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**values, "replicas": 3}, schema)


def test_values_schema_describes_every_value():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}{key} has no description"
            assert "type" in sub, f"{path}{key} has no type"
            walk(sub, f"{path}{key}.")

    walk(schema, "")
    values = load(CHART / "values.yaml")

    def covered(v, node, path):
        for key, sub in v.items():
            assert key in node.get("properties", {}) or isinstance(node.get("additionalProperties"), dict), f"{path}{key} not in the schema"
            if isinstance(sub, dict) and key in node.get("properties", {}):
                covered(sub, node["properties"][key], f"{path}{key}.")

    covered(values, schema, "")


def test_check_jsonschema_accepts_the_values():
    subprocess.run(["check-jsonschema", "--schemafile", str(CHART / "values.schema.json"), str(CHART / "values.yaml")], check=True)


# Lines of deploy/ that the chart renders from values or helpers instead of
# writing them literally.
TEMPLATED = re.compile(r"^(name: feishu-kafka-bridge|app\.kubernetes\.io/name:|replicas:|image:|imagePullPolicy:|terminationGracePeriodSeconds:|seconds:|secretName:|cpu:|memory:|minAvailable:|minReplicas:|maxReplicas:|averageUtilization:|port: 9\d{3}|- port: 9\d{3}|interval:|scrapeTimeout:|type: ClusterIP|port: 8080|- name: http$|- port: 8080|requests:|limits:|labels:|matchLabels:|selector:|- configMapRef:|annotations:|#)")


@pytest.mark.parametrize("name", ["deployment", "service", "pdb", "hpa", "servicemonitor", "networkpolicy"])
def test_chart_template_is_in_step_with_deploy(name):
    """Every literal line of the plain manifest (probes, ports, env names and
    paths, security context, strategy) appears in the chart's template."""
    template = {l.strip() for l in (CHART / "templates" / f"{name}.yaml").read_text().splitlines()}
    missing = []
    for line in (K8S / f"{name}.yaml").read_text().splitlines():
        s = line.strip()
        if not s or TEMPLATED.match(s) or s.startswith("- name: bridge"):
            if s.startswith("- name: bridge") and s not in template:
                missing.append(s)
            continue
        if s not in template:
            missing.append(s)
    assert not missing, f"{name}: lines of deploy/ missing from the chart: {missing}"


def test_every_setting_is_reachable_from_the_manifests_and_the_chart():
    """docs/operations.md says the ConfigMap holds every setting: every
    environment name the code reads is in the plain ConfigMap or the
    Deployment's env, and in the chart's ConfigMap or env (with a value of
    its own, not only through extraEnv). A secret given by value (X) is
    reachable through its file (X_FILE), which is what the manifests use."""
    known = env_names_in_code()
    by_file = {n for n in known if n + "_FILE" in known}
    cm = set(load(K8S / "configmap.yaml")["data"])
    (c,) = load(K8S / "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    plain = cm | {e["name"] for e in c["env"]}
    assert known - by_file - plain == set(), "settings the plain manifests cannot set"
    templates = "".join((CHART / "templates" / f).read_text() for f in ("configmap.yaml", "deployment.yaml"))
    chart = set(re.findall(r"^\s*(?:- name: )?([A-Z][A-Z0-9_]+):?", templates, re.M))
    assert known - by_file - chart == set(), "settings the chart cannot set"
    assert "extraEnv" in load(CHART / "values.yaml")


def test_chart_configmap_has_the_same_keys():
    keys = set(load(K8S / "configmap.yaml")["data"])
    text = (CHART / "templates" / "configmap.yaml").read_text()
    chart_keys = set(re.findall(r"^  ([A-Z_]+):", text, re.M))
    assert keys == chart_keys


def test_dashboard_and_alerts_use_only_exported_metrics():
    exported = metric_names_in_code()
    dash = json.loads((ROOT / "deploy" / "grafana" / "feishu-kafka-bridge.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = load(ROOT / "deploy" / "prometheus" / "alerts.yaml")
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set(re.findall(r"feishu_bridge_[a-z_]+", " ".join(exprs)))
    assert used, "no metric found"
    assert used <= exported, used - exported
    # Every panel the issue asks for is there.
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for word in ["outcome", "publish latency", "duplicate", "rejections", "dead-letter", "in-flight", "dedup", "queue", "readiness"]:
        assert word in titles, word


def test_promtool_checks_and_unit_tests_the_rules():
    subprocess.run(["promtool", "check", "rules", str(ROOT / "deploy" / "prometheus" / "alerts.yaml")], check=True)
    subprocess.run(["promtool", "test", "rules", str(ROOT / "tests" / "prometheus" / "alerts_test.yaml")], check=True)


def test_the_image_builds_as_ci_does():
    """deploy/Dockerfile's build stage installs the Debian packages the test
    command installs for the build, and runs CI's cargo command."""
    run_sh = (ROOT / "tests" / "run.sh").read_text()
    ci = re.search(r"^build_packages=\(([^)]*)\)", run_sh, re.M).group(1).split()
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    image = re.search(r"apt-get install -y --no-install-recommends ([^\\\n]*)", dockerfile).group(1).split()
    assert sorted(image) == sorted(ci)
    assert "cargo build --release --locked" in run_sh
    assert "RUN cargo build --release --locked --bin feishu-kafka-bridge" in dockerfile
    assert re.search(r"^EXPOSE 8080 9090$", dockerfile, re.M), "both ports"
