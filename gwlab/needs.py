"""The one line a shell that opens sockets raises where its packages are missing.

The pure core, the simulator (:func:`gwlab.simulate`), the figures, reports, summaries,
sweeps and :mod:`gwlab.exercises` import only the standard library and plotly, so they also
run in the browser site (Pyodide), where aiohttp, multidict and prometheus-client are not
installed (``pyproject.toml`` marks them ``sys_platform != 'emscripten'``). The shells that
listen or connect (:mod:`gwlab.server`, the live lab, ``gwlab run`` and ``gwlab serve``)
call :func:`needs` before their imports, so that there they stop with one clear line instead
of a traceback through the import chain.
"""

from __future__ import annotations

import importlib

SOCKETS = ("aiohttp", "multidict", "prometheus_client")
"""The packages of the shells that open sockets (import names)."""

FULL_INSTALL = "pip install gwlab"
"""How to get them: a full install, on CPython."""


class FullInstallNeeded(ImportError):
    """A shell that opens sockets was used where the packages it needs are missing."""

    def _render_traceback_(self) -> list[str]:
        """What IPython (a notebook) shows instead of the traceback through the imports: the
        one line."""
        return [f"{type(self).__name__}: {self}"]


def missing(packages: tuple[str, ...]) -> list[str]:
    """The import names among ``packages`` that cannot be imported here, in their order."""
    absent = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            absent.append(name)
    return absent


def needs(what: str, packages: tuple[str, ...] = SOCKETS, install: str = FULL_INSTALL) -> None:
    """Return when every package of ``packages`` imports; raises :class:`FullInstallNeeded`
    naming ``what``, the missing packages and ``install`` otherwise."""
    absent = missing(packages)
    if absent:
        raise FullInstallNeeded(
            f"{what} needs {', '.join(absent)}, which this Python does not have: it runs on a full "
            f"install ({install})", name=absent[0])

