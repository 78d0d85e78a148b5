"""Prints what a kubelet would need to start the bridge container of a
rendered deployment, as one JSON object: the container's environment as
Kubernetes would assemble it (envFrom the ConfigMap, then env), the Secret's
files with their mount path, the container ports and the probes. The Rust
tests start the real binary from it (tests/chart_runs.rs,
tests/readme_paths.rs).

usage:
  python3 tests/deploy/render_pod.py '<chart values as JSON>'
      the chart rendered by Helm's own engine (helm-python-sdk) with these values
  python3 tests/deploy/render_pod.py --cronjob '<chart values as JSON>'
      the same for the snapshot CronJob's pod (with its args)
  python3 tests/deploy/render_pod.py --readme
      README.md's own deploy commands, taken from README.md (see readme.py):
      {"helm": <pod>, "kustomize": <pod>, "topics": [...], "secret": {...}}
      where each pod's Secret is the one README's `kubectl create secret`
      makes (its keys, with README's placeholder values)
"""
import json
import pathlib
import subprocess
import shutil
import sys

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "feishu-kafka-bridge"


def render_chart(values, name="bridge", namespace="feishu"):
    with helm.Chart.load(CHART) as chart:
        texts = chart.render(values, name=name, namespace=namespace)
    return [o for path, text in sorted(texts.items()) if path.endswith(".yaml")
            for o in yaml.safe_load_all(text) if o]


def kustomize(path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        sys.exit("kubectl is not installed: run `bash tests/run.sh`, which installs it")
    out = subprocess.run([kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def describe(objects, secrets=None, workload="Deployment"):
    """The pod of the one `workload` (Deployment or CronJob) in `objects`.
    Secrets are looked up in `objects`, then in `secrets` (name -> {key:
    value}, the ones the user made by hand); a mounted Secret found in
    neither is an error, as the pod would not start."""
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    (controller,) = by_kind[workload]
    template = controller["spec"]["jobTemplate"]["spec"]["template"] if workload == "CronJob" \
        else controller["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]

    env = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        cm = next((o for o in by_kind.get("ConfigMap", []) if o["metadata"]["name"] == name), None)
        if cm is None:
            sys.exit(f"the Deployment reads ConfigMap {name}, which was not rendered")
        env.update({k: str(v) for k, v in cm["data"].items()})
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]

    files = {}
    for mount in container.get("volumeMounts", []):
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        secret_name = volume["secret"]["secretName"]
        secret = next((o for o in by_kind.get("Secret", []) if o["metadata"]["name"] == secret_name), None)
        if secret is not None:
            data = secret.get("stringData", {})
        elif secrets and secret_name in secrets:
            data = secrets[secret_name]
        else:
            sys.exit(f"the Deployment mounts Secret {secret_name}, which neither the rendered objects nor the user made")
        for key, value in data.items():
            files[f"{mount['mountPath']}/{key}"] = value

    described = {"env": env, "files": files, "args": container.get("args", [])}
    if workload == "Deployment":
        described.update({
            "ports": {p["name"]: p["containerPort"] for p in container["ports"]},
            "readiness": container["readinessProbe"]["httpGet"],
            "liveness": container["livenessProbe"]["httpGet"],
        })
    return described


def main(argv):
    if argv == ["--readme"]:
        import readme
        commands = readme.deploy_commands()
        user_secrets = {commands["secret"]["name"]: commands["secret"]["data"]}
        print(json.dumps({
            "helm": describe(render_chart(commands["helm"]["values"], name=commands["helm"]["release"],
                                          namespace=commands["helm"]["namespace"]), user_secrets),
            "kustomize": describe(kustomize(ROOT / commands["kustomize"]["path"]), user_secrets),
            "topics": commands["topics"],
            "secret": commands["secret"],
            "event_types": commands["event_types"],
        }))
    elif argv[:1] == ["--cronjob"]:
        print(json.dumps(describe(render_chart(json.loads(argv[1])), workload="CronJob")))
    else:
        print(json.dumps(describe(render_chart(json.loads(argv[0])))))


if __name__ == "__main__":
    main(sys.argv[1:])
