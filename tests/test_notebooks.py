"""The committed notebooks: executed, small, without widget state, plotly.js not inlined.

nbval (``make test``) re-runs them and compares their outputs; these checks keep what is
committed fit to open anywhere (GitHub, nbviewer, Binder) and cheap to clone.
"""

from __future__ import annotations

import json
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
