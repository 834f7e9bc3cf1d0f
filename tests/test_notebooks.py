"""The committed notebooks: executed, small, without widget state, plotly.js not inlined.

nbval (``make test``) re-runs them and compares their outputs; these checks keep what is
committed fit to open anywhere (GitHub, nbviewer, Binder) and cheap to clone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

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
