"""The README and docs/ link to each other's sections; a page split or a heading renamed must not
leave a reader at a missing file or anchor."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    in_code = False
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif line.startswith("#") and not in_code:
            found.add(anchor(line.lstrip("#")))
    return found


def relative_links(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if not re.match(r"[a-z]+:", target):
            yield target


def broken_links(page):
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        destination = (page.parent / path) if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no such heading")
    return broken


def test_anchors_follow_githubs_rule():
    assert anchor(" The strongest MLP: `python -m experiments.best`") == (
        "the-strongest-mlp-python--m-experimentsbest")
    assert anchor(" The test suite's time, 2026-12-02 to 2026-12-05") == (
        "the-test-suites-time-2026-12-02-to-2026-12-05")


def test_a_missing_heading_or_file_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## A section\n\n```\n# not a heading\n```\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#a-section) [gone](a.md#not-a-heading) [nofile](c.md) "
                    "[web](https://example.org/x#y) [here](#local)\n\n## Local\n")
    assert broken_links(page) == ["a.md#not-a-heading: no such heading", "c.md: no such file"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_reaches_a_file_and_heading(page):
    assert broken_links(page) == []
