"""The docs' promises that a reader checks by following them: every link leads to a file in the repository, every
result a page cites is committed, and the README stays one short read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
CITED_RESULT = re.compile(r"`((?:docs/)?results/[^`\s]+\.(?:md|json|png|csv))`")  # a results file named as code


def _local_targets(page: Path) -> list[str]:
    targets = [t.split("#", 1)[0] for t in LINK.findall(page.read_text())]
    return [t for t in targets if t and not re.match(r"^[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_leads_to_a_committed_file(page: Path):
    missing = [t for t in _local_targets(page) if not (page.parent / t).exists()]
    assert missing == [], f"{page.relative_to(ROOT)} links to files that are not in the repository: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_cited_result_is_committed(page: Path):
    """A figure names the file its command wrote, committed under docs/results (a command's output folder, such as
    ``results/bench/``, may be named: it is where the reader's own run will write)."""
    cited = CITED_RESULT.findall(page.read_text())
    missing = [c for c in cited if not (ROOT / "docs" / c.removeprefix("docs/")).exists()]
    assert missing == [], f"{page.relative_to(ROOT)} cites results that are not committed under docs/results: {missing}"


def test_readme_is_one_short_read():
    assert len((ROOT / "README.md").read_bytes()) <= 8 * 1024
