"""The README and docs/ hold together: relative links reach a file and a heading, every alert has
a runbook section, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RULES = ROOT / "alerts" / "failsight.rules.yml"
RUNBOOKS = ROOT / "docs" / "alerts.md"
RUNBOOK_BASE = "https://github.com/failsight/failsight/blob/main/docs/alerts.md"
README_LIMIT = 10_000

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower-case, drop all but letters, digits, spaces, hyphens
    and underscores, spaces become hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in _HEADING.findall(_FENCE.sub("", path.read_text()))}


def relative_links(path: Path) -> list[str]:
    out = []
    for target in _LINK.findall(_prose(path.read_text())):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or target.startswith("mailto:"):
            continue
        out.append(target)
    return out


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{path.name}: {target}: no file {dest}")
            continue
        if anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            broken.append(f"{path.name}: {target}: no heading #{anchor} in {dest.name}")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{path.name}: {target}: an anchor into a file that is not Markdown")
    return broken


def alerts() -> dict[str, set[str]]:
    """Each alert name of the shipped rule file, with the runbook_urls its rules give."""
    out: dict[str, set[str]] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                url = rule.get("annotations", {}).get("runbook_url", "")
                out.setdefault(rule["alert"], set()).add(url)
    return out


def test_slugs_follow_github() -> None:
    assert slug("The cleanup journal (`agent.state_dir`)") == "the-cleanup-journal-agentstate_dir"
    assert slug("3a. As a DaemonSet") == "3a-as-a-daemonset"
    assert slug("`http_status`") == "http_status"
    assert slug("FailsightFailoverRecommended") == "failsightfailoverrecommended"


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#a-section) [self](#page) [web](https://example.com/x#y)\n"
        "[missing file](nope.md) [missing anchor](other.md#b-section) [bad self](#nowhere)\n"
        "`[not a link](nope.md)`\n\n```\n[not a link](nope.md)\n```\n"
    )
    found = broken_links(page)
    assert len(found) == 3, found
    assert any("nope.md" in f and "no file" in f for f in found)
    assert any("#b-section" in f for f in found)
    assert any("#nowhere" in f for f in found)


def test_pages_exist() -> None:
    names = {p.name for p in PAGES}
    for page in (
        "README.md",
        "configuration.md",
        "verdict.md",
        "api.md",
        "metrics.md",
        "alerts.md",
        "kubernetes.md",
        "performance.md",
        "troubleshooting.md",
        "architecture.md",
        "CHANGELOG.md",
        "limits.md",
    ):
        assert page in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_a_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_links_every_docs_page() -> None:
    linked = {t.partition("#")[0] for t in relative_links(ROOT / "README.md")}
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"


def test_every_alert_has_a_runbook_section() -> None:
    headings = anchors(RUNBOOKS)
    missing = [name for name in alerts() if name.lower() not in headings]
    assert missing == [], f"docs/alerts.md has no `## <alert name>` section for {missing}"
    found = {h for h in _HEADING.findall(RUNBOOKS.read_text())}
    for name in alerts():
        assert name in found, f"docs/alerts.md: the heading must be exactly `{name}`"


def test_runbook_urls_that_point_at_the_docs_reach_a_section() -> None:
    headings = anchors(RUNBOOKS)
    for name, urls in alerts().items():
        for url in urls:
            if url.startswith(RUNBOOK_BASE):
                assert url == f"{RUNBOOK_BASE}#{name.lower()}", (name, url)
                assert name.lower() in headings


def test_the_readme_is_short() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size < README_LIMIT, f"README.md is {size} bytes; move reference material to docs/"


def test_the_readme_walkthrough_config_is_valid(tmp_path: Path) -> None:
    # The first-agent walkthrough writes its config with a heredoc: that config must load.
    from failsight.agent.config import load_config

    text = (ROOT / "README.md").read_text()
    match = re.search(r"cat > my-agent\.yaml <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    assert match, "the README's walkthrough no longer writes my-agent.yaml"
    path = tmp_path / "my-agent.yaml"
    path.write_text(match.group(1) + "\n")
    config = load_config(path)
    assert config.agent.vantage == "laptop"
    assert config.agent.listen == "127.0.0.1:9750"
