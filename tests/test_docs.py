"""The README and docs/ stay short: plain sentences, a README under 200 lines, links that resolve."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_units(text: str) -> list[str]:
    """Paragraphs and list items of prose: code blocks, tables, headings and images left out."""
    units, current, code = [], [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            code = not code
            units.append(" ".join(current))
            current = []
            continue
        if code or not stripped or stripped.startswith(("|", "#", "<", "![")):
            units.append(" ".join(current))
            current = []
            continue
        if re.match(r"^([-*>]|\d+\.)\s", stripped):
            units.append(" ".join(current))
            current = []
            stripped = re.sub(r"^([-*>]|\d+\.)\s+", "", stripped)
        current.append(stripped)
    units.append(" ".join(current))
    return [u for u in units if u]


def sentences(text: str) -> list[str]:
    """Sentences of prose, each inline code span counted as one word and each link as its text."""
    out = []
    for unit in prose_units(text):
        unit = re.sub(r"`[^`]*`", "X", unit)
        unit = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", unit)
        out += [s for s in re.split(r"(?<=[.!?])\s+", unit) if len(s.split()) >= 3]
    return out


def test_sentences_skips_code_and_tables_and_splits_items():
    text = "One two three four.\n\n```\nnot prose at all here\n```\n| a | b |\n- item one two. Next one here\n"
    assert sentences(text) == ["One two three four.", "item one two.", "Next one here"]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_pages_are_written_in_short_sentences(page):
    lengths = [len(s.split()) for s in sentences(page.read_text())]
    long = [s for s in sentences(page.read_text()) if len(s.split()) > 40]
    assert statistics.median(lengths) < 20, page.name
    assert long == [], f"{page.name}: sentences over 40 words"


def test_readme_is_under_200_lines_and_holds_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name}: {target}"
