"""The documentation's links: every link in README.md and docs/ leads
somewhere a reader can follow. Relative links must name a file of this
repository (never outside it), anchors must name a heading of their page,
and links out of the repository must go to public sites a user can reach.
Run by tests/run.sh through pytest."""
import pathlib
import re
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Public sites the documentation may send a reader to.
PUBLIC_HOSTS = {
    "open.feishu.cn", "open.larksuite.com", "github.com", "kafka.apache.org",
    "cloudevents.io", "prometheus.io", "grafana.com", "helm.sh", "kubernetes.io",
}
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text):
    """The text outside fenced code blocks and inline code spans."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "``", line))
    return "\n".join(out)


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    for line in prose(path.read_text()).split("\n"):
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path):
    return LINK.findall(prose(path.read_text()))


def broken_links(page, text=None):
    """What is wrong with each link of `page` (its text, or `text` as if it
    were at that place)."""
    broken = []
    for target in LINK.findall(prose(page.read_text() if text is None else text)):
        url = urllib.parse.urlsplit(target)
        if url.scheme in ("http", "https"):
            if url.hostname not in PUBLIC_HOSTS:
                broken.append(f"{target}: not a public site a reader can reach")
            continue
        if url.scheme:
            broken.append(f"{target}: scheme {url.scheme}")
            continue
        file = page if not url.path else (page.parent / urllib.parse.unquote(url.path)).resolve()
        if ROOT not in file.parents and file != ROOT:
            broken.append(f"{target}: outside the repository")
        elif not file.exists():
            broken.append(f"{target}: no such file")
        elif url.fragment and file.suffix == ".md" and url.fragment not in anchors(file):
            broken.append(f"{target}: no heading #{url.fragment} in {file.relative_to(ROOT)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_can_be_followed(page):
    broken = broken_links(page)
    assert not broken, "\n".join(broken)


def test_the_readme_maps_every_page_of_docs():
    listed = {t for t in links(ROOT / "README.md") if t.startswith("docs/")}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= listed, f"not linked from README.md: {sorted(pages - listed)}"


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: p.name)
def test_each_page_starts_by_saying_what_it_answers(page):
    lines = [l for l in page.read_text().split("\n") if l.strip()]
    assert lines[0].startswith("# "), "a title first"
    assert not lines[1].startswith("#"), "then what the page answers, before any section"


def test_the_readme_fits_on_a_few_screens():
    assert len((ROOT / "README.md").read_text().split("\n")) <= 200


def test_the_checker_catches_what_it_should():
    page = ROOT / "docs" / "records.md"
    assert "member-records" in anchors(page)
    assert slug("Answers (public contract)") == "answers-public-contract"
    assert slug("`BRIDGE_EVENT_TYPES` and friends") == "bridge_event_types-and-friends"
    text = ("[a](no-such.md) [b](records.md#nope) [c](../../etc/passwd) [d](../../outside/notes.md) "
            "[e](https://intranet.example.com/x) [f](guarantees.md#order) [g](#raw-records) "
            "`[h](in-code.md)` [i](../deploy/schema/feishu.raw_event.v1.json)")
    broken = broken_links(page, text)
    assert [b.split(":")[0] for b in broken] == [
        "no-such.md", "records.md#nope", "../../etc/passwd", "../../outside/notes.md",
        "https",  # https://intranet.example.com/x
    ], broken
