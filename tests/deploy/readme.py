"""README.md's own deploy instructions, read from README.md itself so that a
test runs what a user copies: the topics step 1 tells them to create, the
event types step 2 tells them to subscribe to, the `kubectl create secret`
command, `helm install` with its `--set` flags, and `kubectl apply -k`.
Nothing here repeats a value of README; when README changes, the tests run
the new commands (or fail here, naming what they could not find).
"""
import pathlib
import re
import shlex

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

TOPIC = r"[A-Za-z0-9._-]+"
EVENT_TYPE = r"im\.chat\.member\.[a-z]+\.[a-z]+_v\d+"


def shell_commands(text=None):
    """Every command of README's ```sh blocks, continuation lines joined,
    as argument lists (comments dropped)."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def numbered_step(title, text=None):
    """The text of the numbered step whose bold title is `title`."""
    text = README.read_text() if text is None else text
    m = re.search(r"^\d+\. \*\*" + re.escape(title) + r"\*\*(.*?)(?=^\d+\. \*\*|^## )", text, re.S | re.M)
    if m is None:
        raise LookupError(f"README.md has no numbered step **{title}**")
    return m.group(1)


def helm_set(values, assignment):
    """One `--set key=value` as Helm applies it: dotted path (`\\.` is a
    literal dot), true/false as booleans, integers as numbers."""
    key, _, raw = assignment.partition("=")
    path = [p.replace("\0", ".") for p in key.replace("\\.", "\0").split(".")]
    if raw in ("true", "false"):
        value = raw == "true"
    elif re.fullmatch(r"-?\d+", raw):
        value = int(raw)
    else:
        value = raw
    node = values
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def after(words, flag):
    return words[words.index(flag) + 1] if flag in words else None


def deploy_commands(text=None):
    commands = shell_commands(text)

    def one(pred, what):
        found = [c for c in commands if pred(c)]
        if len(found) != 1:
            raise LookupError(f"README.md should have exactly one {what} command, found {len(found)}")
        return found[0]

    secret_cmd = one(lambda c: c[0] == "kubectl" and "create" in c and "secret" in c, "`kubectl create secret`")
    generic = secret_cmd.index("generic")
    data = {}
    for word in secret_cmd:
        if word.startswith("--from-literal="):
            key, _, value = word[len("--from-literal="):].partition("=")
            data[key] = value
    secret = {"name": secret_cmd[generic + 1], "namespace": after(secret_cmd, "-n"), "data": data}

    helm_cmd = one(lambda c: c[:2] == ["helm", "install"], "`helm install`")
    values = {}
    for i, word in enumerate(helm_cmd):
        if word == "--set":
            helm_set(values, helm_cmd[i + 1])
        elif word.startswith("--set="):
            helm_set(values, word[len("--set="):])
    helm = {"release": helm_cmd[2], "chart": helm_cmd[3], "namespace": after(helm_cmd, "-n"), "values": values}

    apply_cmd = one(lambda c: c[0] == "kubectl" and "apply" in c and "-k" in c, "`kubectl apply -k`")
    kustomize = {"path": after(apply_cmd, "-k"), "namespace": after(apply_cmd, "-n")}

    topics = re.findall(r"`(" + TOPIC + r")`", numbered_step("Topics.", text))
    event_types = re.findall(r"`(" + EVENT_TYPE + r")`", numbered_step("The app.", text))
    return {"secret": secret, "helm": helm, "kustomize": kustomize, "topics": topics, "event_types": event_types}
