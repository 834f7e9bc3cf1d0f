"""Every tutorial runs top to bottom as the browser site runs it, checked on CPython: the site's
copy of the notebook (each cell tagged ``lite-skip`` replaced by its note), the lab in virtual
mode (``GWLAB_LAB_MODE``, Pyodide's default), and a kernel where the packages the site does not
serve cannot be imported, no socket connects, no process starts (one CPU, no
``multiprocessing.synchronize``) and ``resource`` has no ``getpagesize``, as in Pyodide. A new cell that needs what the
browser lacks fails here unless it is tagged (tests/test_lite_build.py lists the cells that are);
tests/test_lite.py runs the site itself in chromium."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from lite.build import NOTEBOOKS, skip_socket_cells

pytestmark = pytest.mark.timeout(600)

ABSENT = ("aiohttp", "multidict", "yarl", "redis", "openai", "httpx", "langchain_core",
          "langchain_openai", "pandas", "numpy", "dask", "distributed", "uvloop", "playwright")
"""Packages of a full install that the browser site does not serve (lite/site.txt lists what it
does)."""

BROWSER = f"""\
import importlib.abc
import os
import resource
import socket
import sys


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in {ABSENT!r} or name == "multiprocessing.synchronize":
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the browser site)", name=name)


def _no_socket(self, *args, **kwargs):
    raise OSError("no sockets in the browser")


sys.meta_path.insert(0, _Absent())
socket.socket.connect = socket.socket.connect_ex = _no_socket
os.cpu_count = lambda: 1
del resource.getpagesize
"""
"""The ``sitecustomize`` of the kernel: what Pyodide lacks, taken away at its start."""

TUTORIALS = sorted(path.name for path in NOTEBOOKS.glob("[0-9]*.ipynb"))


@pytest.fixture(scope="module")
def browser_like(tmp_path_factory):
    """A folder holding the kernel's ``sitecustomize``."""
    folder = tmp_path_factory.mktemp("browser")
    (folder / "sitecustomize.py").write_text(BROWSER, encoding="utf-8")
    return folder


def _errors(notebook: nbformat.NotebookNode) -> list[str]:
    return [f"cell {index}: {output['ename']}: {output['evalue']}\n{cell.source[:300]}"
            for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            for output in cell.get("outputs", ()) if output.get("output_type") == "error"]


@pytest.mark.parametrize("name", TUTORIALS)
def test_each_tutorial_runs_top_to_bottom_as_the_browser_site_runs_it(name, browser_like, monkeypatch):
    notebook = nbformat.from_dict(skip_socket_cells(nbformat.read(NOTEBOOKS / name, as_version=4))[0])
    monkeypatch.setenv("GWLAB_LAB_MODE", "virtual")
    monkeypatch.setenv("PYTHONPATH", f"{browser_like}:{NOTEBOOKS.parent}")
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    assert _errors(notebook) == []
