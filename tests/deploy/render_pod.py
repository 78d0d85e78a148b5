"""Renders the chart with Helm's own engine (helm-python-sdk) and prints what
a kubelet would need to start the bridge container, as one JSON object:
the container's environment as Kubernetes would assemble it (envFrom the
ConfigMap, then env), the Secret's files with their mount path, the
container ports and the probes. tests/chart_runs.rs starts the real binary
from it.

usage: python3 tests/deploy/render_pod.py '<values as JSON>'
"""
import json
import pathlib
import sys

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "helm" / "feishu-kafka-bridge"


def main(values):
    with helm.Chart.load(CHART) as chart:
        texts = chart.render(values, name="bridge", namespace="feishu")
    objects = [o for path, text in sorted(texts.items()) if path.endswith(".yaml")
               for o in yaml.safe_load_all(text) if o]
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    env = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        cm = next(o for o in by_kind["ConfigMap"] if o["metadata"]["name"] == name)
        env.update({k: str(v) for k, v in cm["data"].items()})
    for e in container.get("env", []):
        env[e["name"]] = e["value"]

    files = {}
    for mount in container.get("volumeMounts", []):
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        secret_name = volume["secret"]["secretName"]
        secret = next((o for o in by_kind.get("Secret", []) if o["metadata"]["name"] == secret_name), None)
        if secret is None:
            sys.exit(f"the Deployment mounts Secret {secret_name}, which the chart did not render")
        for key, value in secret.get("stringData", {}).items():
            files[f"{mount['mountPath']}/{key}"] = value

    print(json.dumps({
        "env": env,
        "files": files,
        "ports": {p["name"]: p["containerPort"] for p in container["ports"]},
        "readiness": container["readinessProbe"]["httpGet"],
        "liveness": container["livenessProbe"]["httpGet"],
    }))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
