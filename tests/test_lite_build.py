"""The browser site's build without a browser (tests/test_lite.py opens it in one): the cells
it skips, tagged ``lite-skip`` with a note of what they show on a full install and replaced in
the site's copy of each notebook by that note; its bounds; the server's refusal of a folder
without a site."""

from __future__ import annotations

import copy
import json
import sys

import pytest

from lite import serve
from lite.build import (NOTEBOOKS, SKIP_NOTE_KEY, SKIP_TAG, BuildError, _run, contents, skip_socket_cells,
                        skipped_cells, up_to_date)

SKIPPED = {
    "00_quickstart.ipynb": [37],
    "01_token_bucket.ipynb": [],
    "02_weighted_balancing.ipynb": [],
    "03_circuit_breaker.ipynb": [],
    "04_metrics_prometheus.ipynb": [9, 12, 14],
    "05_fault_drills.ipynb": [],
    "06_load_testing.ipynb": [],
    "07_capstone.ipynb": [],
    "08_llm_traffic.ipynb": [15, 17, 18, 20],
    "09_retries_and_metastability.ipynb": [],
    "10_scale_out.ipynb": [3, 5, 7, 9, 11, 15, 17, 19, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 43, 45, 46, 56],
}
"""Per notebook, the cells the browser site replaces by a note: those that need a real socket
(an HTTP request, /metrics over the network, Redis, a client SDK calling the gateway) and
those that only read what they got. tests/test_lite_tutorials.py
runs every other cell as the browser does."""


def _code(cell_id: str, source: str, **metadata) -> dict:
    return {"cell_type": "code", "execution_count": 1, "id": cell_id, "metadata": metadata,
            "outputs": [{"name": "stdout", "output_type": "stream", "text": ["out\n"]}], "source": source}


NOTEBOOK = {"cells": [_code("first", "a = 1"),
                      _code("fetch", "fetch(url)\nprint(page)", tags=[SKIP_TAG], **{SKIP_NOTE_KEY: "it prints the page."}),
                      _code("last", "b = 2")], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_the_skipped_cells_of_each_notebook():
    assert skipped_cells() == SKIPPED


def test_a_tagged_cell_becomes_its_note_and_the_others_stay():
    before = copy.deepcopy(NOTEBOOK)
    site, replaced = skip_socket_cells(NOTEBOOK)
    assert replaced == [1]
    assert NOTEBOOK == before  # the repository's notebook is left as it is
    assert site["cells"][0] == NOTEBOOK["cells"][0] and site["cells"][2] == NOTEBOOK["cells"][2]
    assert site["cells"][1] == {
        "cell_type": "markdown", "id": "fetch", "metadata": {"tags": [SKIP_TAG]},
        "source": "> **Skipped in the browser:** this cell needs a real socket. On a full install (`pip install gwlab`) "
                  "it prints the page.\n\n```python\nfetch(url)\nprint(page)\n```"}


def test_a_tagged_cell_without_a_note_is_refused():
    notebook = copy.deepcopy(NOTEBOOK)
    del notebook["cells"][1]["metadata"][SKIP_NOTE_KEY]
    with pytest.raises(BuildError, match="cell 1 is tagged 'lite-skip' but its metadata has no 'lite_note'"):
        skip_socket_cells(notebook)


def test_the_site_copy_has_notes_where_the_tagged_cells_were(tmp_path):
    assert contents(tmp_path / "contents") == SKIPPED
    for name, indexes in SKIPPED.items():
        original = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))["cells"]
        site = json.loads((tmp_path / "contents" / "notebooks" / name).read_text(encoding="utf-8"))["cells"]
        assert len(site) == len(original)
        assert [i for i, cell in enumerate(site) if cell["cell_type"] != original[i]["cell_type"]] == indexes
        assert all(site[i]["source"].startswith("> **Skipped in the browser:**") for i in indexes)
    assert (tmp_path / "contents" / "notebooks" / "data" / "retry_storm_phase.csv").is_file()
    assert (tmp_path / "contents" / "scenarios" / "p1_outage.toml").is_file()  # ../scenarios from a notebook


def test_a_step_past_its_timeout_says_which_and_how_long():
    with pytest.raises(BuildError, match=r"^sleeping: still running after 0.2 s \(lite.build's timeout\)$"):
        _run("sleeping", [sys.executable, "-c", "import time; time.sleep(30)"], 0.2)


def test_a_failed_step_says_what_it_printed():
    with pytest.raises(BuildError, match=r"^failing failed \(exit 3\):\nwhy$"):
        _run("failing", [sys.executable, "-c", "import sys; print('why', file=sys.stderr); sys.exit(3)"], 30)


def test_a_folder_without_a_site_is_neither_up_to_date_nor_served(tmp_path):
    assert not up_to_date(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no site in {tmp_path}: build it first \\(make lite\\)"):
        serve.server(tmp_path)
