"""What a fresh machine needs to build and test, kept true: the Rust version
Cargo.toml declares is one every locked dependency accepts, and the
documentation states that version; the test command installs tansu with the
user's own cargo and Python tools only into its virtual environment; README's
prerequisites name the Debian packages the build needs.
Run by tests/run.sh through pytest."""
import json
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "tests" / "run.sh"
# How the documentation states the Rust version a machine needs.
STATED = re.compile(r"\bRust (\d+\.\d+(?:\.\d+)?) or newer\b")


def version(text):
    """A Rust version (`1.88`, `1.87.0`) as numbers, for comparing."""
    parts = [int(p) for p in text.strip().split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def declared_rust_version():
    cargo_toml = (ROOT / "Cargo.toml").read_text()
    package = re.search(r"^\[package\]\n(.*?)(?=^\[|\Z)", cargo_toml, re.M | re.S).group(1)
    m = re.search(r'^rust-version\s*=\s*"([^"]+)"', package, re.M)
    assert m, "Cargo.toml's [package] declares no rust-version"
    return m.group(1)


def locked_rust_versions():
    """(name, version, rust_version) of every dependency in Cargo.lock's
    resolve that declares a rust_version (this crate itself left out)."""
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, f"cargo metadata --locked failed:\n{out.stderr}"
    meta = json.loads(out.stdout)
    resolved = {node["id"] for node in meta["resolve"]["nodes"]} - set(meta["workspace_members"])
    return [(p["name"], p["version"], p["rust_version"])
            for p in meta["packages"] if p["id"] in resolved and p.get("rust_version")]


def script_lines():
    """tests/run.sh without its comments."""
    return [l for l in RUN_SH.read_text().split("\n") if not l.lstrip().startswith("#")]


def readme_prerequisites():
    """The Debian packages README's "The two commands" tells a fresh
    machine to install."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## The two commands\n(.*?)(?=^## )", readme, re.M | re.S).group(1)
    lines = re.findall(r"^\* Debian/Ubuntu: `sudo apt-get install ([^`]+)`", section, re.M)
    assert len(lines) == 1, "one Debian/Ubuntu line in README's \"The two commands\""
    return [w for w in lines[0].split() if not w.startswith("-")]


def build_packages():
    m = re.search(r"^build_packages=\(([^)]*)\)", RUN_SH.read_text(), re.M)
    assert m, "tests/run.sh names its build_packages"
    return m.group(1).split()


def test_the_declared_rust_version_builds_the_locked_dependencies():
    declared = declared_rust_version()
    locked = locked_rust_versions()
    assert locked, "cargo metadata lists no rust_version at all"
    newer = sorted((p for p in locked if version(p[2]) > version(declared)),
                   key=lambda p: version(p[2]), reverse=True)
    assert not newer, (
        f"Cargo.toml says rust-version = \"{declared}\", but Cargo.lock holds packages that need more: "
        + ", ".join(f"{name} {v} needs Rust {rv}" for name, v, rv in newer)
        + "; raise rust-version (and what docs/development.md states) to the newest of these")


def test_the_documentation_states_the_declared_rust_version():
    declared = declared_rust_version()
    development = (ROOT / "docs" / "development.md").read_text()
    assert STATED.search(development), "docs/development.md states the Rust version as \"Rust 1.NN or newer\""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for stated in STATED.findall(page.read_text()):
            assert version(stated) == version(declared), (
                f"{page.relative_to(ROOT)} says Rust {stated} or newer, Cargo.toml's rust-version is {declared}")


def test_the_test_command_needs_no_root_cargo():
    """sudo cargo fails for a rustup user (root has no cargo); tansu is
    installed with the user's own."""
    bad = [l.strip() for l in script_lines() if re.search(r"\b(?:sudo|as_root)\b.*\bcargo\b", l)]
    assert not bad, f"tests/run.sh runs cargo as root: {bad}"
    assert any(re.search(r"^\s*cargo install tansu\b", l) for l in script_lines())


def test_the_test_command_installs_python_tools_only_into_its_venv():
    """Debian 12 refuses pip into its own Python (PEP 668); and nothing
    should be installed into a machine's Python behind its owner's back."""
    lines = script_lines()
    pip = [l.strip() for l in lines if re.search(r"\bpip3?\b.*\binstall\b", l)]
    assert pip, "tests/run.sh installs tests/requirements.txt"
    outside = [l for l in pip if not l.startswith('"$venv/bin/python" -m pip install ')]
    assert not outside, f"pip install outside the venv: {outside}"
    assert not any("--break-system-packages" in l or "--user" in l.split() for l in pip)
    text = "\n".join(lines)
    assert re.search(r'-m venv\b[^\n]*"\$venv"', text), "tests/run.sh makes its venv"
    path = text.index('export PATH="$venv/bin:$PATH"')
    for later in ("python3 tests/vectors/gen.py", "python3 -m pytest", "cargo test --locked"):
        assert path < text.index(later), f"the venv is first on PATH before `{later}`"


def test_the_readme_prerequisites_are_what_the_build_installs():
    readme, script = readme_prerequisites(), build_packages()
    assert readme, "README names Debian packages"
    assert not set(readme) - set(script), (
        f"README's prerequisites name packages tests/run.sh's build_packages lacks: {sorted(set(readme) - set(script))}")
    assert not set(script) - set(readme), (
        f"tests/run.sh's build_packages has packages README's prerequisites do not name: {sorted(set(script) - set(readme))}")


def test_the_checks_catch_what_they_should():
    assert version("1.87.0") < version("1.88") < version("1.88.1") < version("1.100")
    assert STATED.findall("needs Rust 1.88 or newer, Rust 1.9.2 or newer") == ["1.88", "1.9.2"]
