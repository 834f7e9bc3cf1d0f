"""The committed notebooks: executed, small, without widget state, plotly.js not inlined.

nbval (``make test``) re-runs them and compares their outputs; these checks keep what is
committed fit to open anywhere (GitHub, nbviewer, Binder) and cheap to clone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from nbval.plugin import get_sanitize_patterns

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MAX_BYTES = 1024 * 1024
PLOTLY_BUNDLE = "plotly.js v"
"""The licence header of plotly.js, present wherever the whole library was inlined."""
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def test_the_quickstart_is_there():
    assert "00_quickstart.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_small_and_carries_no_widget_state(path: Path):
    text = path.read_text(encoding="utf-8")
    assert len(text.encode()) < MAX_BYTES
    nb = json.loads(text)
    assert "widgets" not in nb["metadata"]
    assert WIDGET_STATE not in text
    assert PLOTLY_BUNDLE not in text
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_executed_top_to_bottom_without_errors(path: Path):
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not [o for c in cells for o in c["outputs"] if o.get("name") == "stderr"]


GLOSSARY = NOTEBOOKS[0].parent / "glossary.md"
ITALICS = re.compile(r"(?<![*\w])\*([^*\n]+?)\*(?![*\w])")
"""A phrase in *italics* (not **bold**) in a notebook's markdown."""


def _terms(glossary: str) -> set[str]:
    """The headwords of the glossary's entries (``**a, b.**`` gives ``a`` and ``b``), as
    :func:`_term` writes them."""
    heads = re.findall(r"^\*\*(.+?)\.\*\*", glossary, re.M)
    return {_term(t) for head in heads for t in head.split(", ")}


def _term(phrase: str) -> str:
    """A phrase as a glossary headword would be written: lower case, hyphens as spaces."""
    return phrase.lower().replace("-", " ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_word_in_italics_is_in_the_glossary(path: Path):
    terms = _terms(GLOSSARY.read_text(encoding="utf-8"))
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    # Titles of books and journals in the references are in italics as citations are.
    text = "\n".join("".join(c["source"]) for c in cells
                     if c["cell_type"] == "markdown" and not "".join(c["source"]).startswith("## References"))
    assert "[glossary](glossary.md)" in text
    missing = {p for p in ITALICS.findall(text) if p != "italics" and _term(p) not in terms
               and _term(p).removesuffix("s") not in terms}
    assert not missing, f"in italics but not in the glossary (use **bold** for emphasis): {sorted(missing)}"


SANITIZE = NOTEBOOKS[0].parent / "nbval_sanitize.cfg"


def _sanitized(text: str) -> str:
    """``text`` as nbval sees it under ``make test``, with the patterns it reads from
    :data:`SANITIZE` applied in their order."""
    for regex, replace in get_sanitize_patterns(SANITIZE.read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


def test_nbval_reads_every_pattern_of_the_sanitize_file():
    text = SANITIZE.read_text(encoding="utf-8")
    assert len(get_sanitize_patterns(text)) == len(re.findall(r"^\[.+\]$", text, re.M))


def test_a_lab_that_fell_back_to_free_ports_reads_as_one_that_did_not():
    fell_back = ("gwlab lab (running)\n  gateway  http://127.0.0.1:43121   (port 8080 was in use)\n"
                 "  metrics  http://127.0.0.1:38001/metrics   (port 9090 was in use)\n")
    plain = "gwlab lab (running)\n  gateway  http://127.0.0.1:8080\n  metrics  http://127.0.0.1:9090/metrics\n"
    assert _sanitized(fell_back) == _sanitized(plain)


TUTORIALS = [p for p in NOTEBOOKS if re.match(r"\d\d_", p.name) and p.name != "00_quickstart.ipynb"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
"""A Markdown link's target, without its anchor."""


def _markdown(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "markdown"]


def test_tutorials_are_numbered_in_order_from_01():
    assert [p.name[:2] for p in TUTORIALS] == [f"{i:02}" for i in range(1, len(TUTORIALS) + 1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_relative_link_of_a_notebook_exists(path: Path):
    targets = {t for text in _markdown(path) for t in LINK.findall(text) if "://" not in t}
    assert sorted(t for t in targets if not (path.parent / t).exists()) == []


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_a_tutorial_has_its_sections_and_its_worked_solution(path: Path):
    heads = [text.split("\n", 1)[0] for text in _markdown(path)]
    assert heads[0].startswith(f"# {path.name[:2]} · ")
    for section in ("## Summary", "## References", "## What's next"):
        assert section in heads, section
    assert (path.parent / "solutions" / f"{path.stem}.py").exists()


@pytest.mark.parametrize("path", TUTORIALS[:-1], ids=lambda p: p.name)
def test_whats_next_leads_to_the_next_tutorial(path: Path):
    following = TUTORIALS[TUTORIALS.index(path) + 1].name
    nxt = next(text for text in _markdown(path) if text.startswith("## What's next"))
    assert f"]({following})" in nxt


def test_the_glossary_names_every_notebook():
    text = GLOSSARY.read_text(encoding="utf-8").split("\n**", 1)[0]
    assert sorted(p.name for p in NOTEBOOKS if f"]({p.name})" not in text) == []
