"""Build the browser site of gwlab (JupyterLite on Pyodide) into ``build/lite``: ``make lite``.

The site is static and fetches nothing outside itself: Pyodide (from the npm registry's
``pyodide`` package), gwlab's own wheel and the pure-Python wheels it needs are copied into it,
locked by the Pyodide kernel's lock add-on, and the kernel's PyPI fallback is off. What the
build downloads (Pyodide's tarball, the wheels of ``lite/site.txt``) is kept under
``build/lite-cache/``, so a rebuild is offline. The notebooks are copied from ``notebooks/``,
each cell tagged :data:`SKIP_TAG` replaced by a note (:func:`skip_socket_cells`).

Run as ``python -m lite.build [--out DIR]``; the build tools are pinned in
``lite/requirements.txt``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SCENARIOS = ROOT / "scenarios"
"""The scenario files the notebooks read (``../scenarios/...``): the site holds them beside
its ``notebooks/`` folder, as the repository does."""
OUT = ROOT / "build" / "lite"
CACHE = ROOT / "build" / "lite-cache"
SITE_REQUIREMENTS = ROOT / "lite" / "site.txt"
"""The packages the site's kernel installs from its own wheels (their dependencies follow)."""

PYODIDE = "314.0.6"
"""The Pyodide release the kernel of ``lite/requirements.txt`` runs (npm package ``pyodide``)."""
PYODIDE_PYTHON = "3.14"
"""Its Python, for which the wheels are downloaded."""
DOWNLOAD_TIMEOUT = 600.0
"""Seconds one download (``npm pack``, ``pip download``) may take."""
BUILD_TIMEOUT = 900.0
"""Seconds ``jupyter lite build`` may take."""
FIGURE_NEEDS = ("nbformat",)
"""What plotly's display needs in a notebook without its lock saying so (plotly is imported
inside ``figure()``, so the lock's import scan never sees it)."""

SKIP_TAG = "lite-skip"
"""The tag of a cell that needs a real socket: the site shows a note in its place."""
SKIP_NOTE_KEY = "lite_note"
"""The key, in such a cell's ``metadata``, of what the cell shows on a full install."""
KERNEL_PLUGIN = "@jupyterlite/pyodide-kernel-extension:kernel"


class BuildError(Exception):
    """A step of the build failed; the message names the step and what it printed."""


def skip_socket_cells(notebook: dict) -> tuple[dict, list[int]]:
    """A copy of ``notebook`` (nbformat 4 JSON as a dict) in which every cell tagged
    :data:`SKIP_TAG` is a markdown note: that the cell needs a real socket and is skipped in
    the browser, then its :data:`SKIP_NOTE_KEY` text and its source as a quoted code block.
    Returns the copy and the indexes of the replaced cells. Raises :class:`BuildError` for a
    tagged cell without a note."""
    site = copy.deepcopy(notebook)
    replaced = []
    for index, cell in enumerate(site["cells"]):
        metadata = cell.get("metadata", {})
        if SKIP_TAG not in metadata.get("tags", ()):
            continue
        note = metadata.get(SKIP_NOTE_KEY, "").strip()
        if not note:
            raise BuildError(f"cell {index} is tagged {SKIP_TAG!r} but its metadata has no {SKIP_NOTE_KEY!r}: "
                             f"say what it shows on a full install")
        source = "".join(cell["source"]).rstrip("\n")
        text = (f"> **Skipped in the browser:** this cell needs a real socket. On a full install "
                f"(`pip install gwlab`) {note}\n\n```python\n{source}\n```")
        site["cells"][index] = {"cell_type": "markdown", "id": cell.get("id", f"lite-skip-{index}"),
                                "metadata": {"tags": [SKIP_TAG]}, "source": text}
        replaced.append(index)
    return site, replaced


def skipped_cells(folder: Path = NOTEBOOKS) -> dict[str, list[int]]:
    """Per notebook of ``folder`` (file name), the indexes of its cells tagged :data:`SKIP_TAG`."""
    out = {}
    for path in sorted(folder.glob("*.ipynb")):
        _, replaced = skip_socket_cells(json.loads(path.read_text(encoding="utf-8")))
        out[path.name] = replaced
    return out


def inputs(notebooks: Path = NOTEBOOKS) -> list[Path]:
    """The files the site of ``notebooks`` is built from: a site newer than all of them is up
    to date."""
    files = [ROOT / "pyproject.toml", ROOT / "lite" / "requirements.txt", SITE_REQUIREMENTS, Path(__file__)]
    files += sorted((ROOT / "gwlab").rglob("*.py"))
    files += sorted(path for folder in (notebooks, SCENARIOS) for path in folder.rglob("*") if path.is_file())
    return files


def up_to_date(out: Path = OUT, notebooks: Path = NOTEBOOKS) -> bool:
    """Whether ``out`` holds a finished build newer than every file of :func:`inputs` (its
    lock is written last)."""
    stamp = lock_path(out)
    return stamp.is_file() and stamp.stat().st_mtime >= max(path.stat().st_mtime for path in inputs(notebooks))


def _run(step: str, command: list[str], timeout: float, **kwargs) -> None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{step}: still running after {timeout:g} s (lite.build's timeout)") from None
    if proc.returncode != 0:
        raise BuildError(f"{step} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")


def pyodide(cache: Path) -> Path:
    """The npm tarball of Pyodide :data:`PYODIDE`, downloaded once into ``cache``."""
    tarball = cache / f"pyodide-{PYODIDE}.tgz"
    if not tarball.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        _run("npm pack pyodide", ["npm", "pack", f"pyodide@{PYODIDE}", "--pack-destination", str(cache)],
             DOWNLOAD_TIMEOUT)
    return tarball


def unpack_pyodide(tarball: Path, dest: Path) -> None:
    """Unpack ``tarball`` into ``dest`` with a lock that lists no packages of Pyodide's (the
    npm package has none of their wheels: the site's lock lists only its own) and the
    ``info.version`` the lock tools require."""
    dest.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith("package/"):
                member.name = member.name.removeprefix("package/")
                archive.extract(member, dest, filter="data")
    path = dest / "pyodide-lock.json"
    lock = json.loads(path.read_text(encoding="utf-8"))
    lock["info"]["version"] = PYODIDE
    lock["packages"] = {}
    path.write_text(json.dumps(lock, indent=2) + "\n", encoding="utf-8")


def kernel_stubs() -> Path:
    """The folder of the Pyodide kernel's own wheels (its ``widgetsnbextension`` stub among them)."""
    import jupyterlite_pyodide_kernel

    share = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "@jupyterlite" / "pyodide-kernel-extension"
    stubs = share / "static" / "pypi"
    if not stubs.is_dir():
        raise BuildError(f"no wheels of jupyterlite-pyodide-kernel {jupyterlite_pyodide_kernel.__version__} in {stubs}")
    return stubs


def site_wheels(cache: Path) -> Path:
    """The pure-Python wheels of :data:`SITE_REQUIREMENTS` and their dependencies for Pyodide's
    Python, downloaded once per version of that file into a folder of ``cache``."""
    requirements = SITE_REQUIREMENTS.read_bytes()
    folder = cache / f"wheels-{hashlib.sha256(requirements).hexdigest()[:12]}"
    done = folder / ".complete"
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        _run("pip download (the site's wheels)",
             [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--platform", "any",
              "--implementation", "py", "--abi", "none", "--python-version", PYODIDE_PYTHON,
              "--find-links", str(kernel_stubs()), "--dest", str(folder), "-r", str(SITE_REQUIREMENTS)],
             DOWNLOAD_TIMEOUT)
        done.touch()
    return folder


def gwlab_wheel(dest: Path) -> Path:
    """gwlab's own wheel, built from the working tree into ``dest`` (emptied first)."""
    shutil.rmtree(dest, ignore_errors=True)
    _run("pip wheel (gwlab)", [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "--wheel-dir", str(dest), str(ROOT)], DOWNLOAD_TIMEOUT)
    return dest


def contents(dest: Path, notebooks: Path = NOTEBOOKS) -> dict[str, list[int]]:
    """Copy ``notebooks`` into ``dest/notebooks`` for the site, socket cells replaced by notes,
    and :data:`SCENARIOS` into ``dest/scenarios``; returns the replaced cells per notebook."""
    shutil.copytree(notebooks, dest / "notebooks", ignore=shutil.ignore_patterns(".*", "__pycache__", "*.cfg"))
    shutil.copytree(SCENARIOS, dest / "scenarios")
    replaced = {}
    for path in sorted((dest / "notebooks").glob("*.ipynb")):
        site, replaced[path.name] = skip_socket_cells(json.loads(path.read_text(encoding="utf-8")))
        path.write_text(json.dumps(site, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return replaced


def configure(lite_dir: Path, wheels: list[Path]) -> None:
    """Write the build's and the site's configuration into ``lite_dir``."""
    build = {
        "LiteBuildConfig": {"contents": ["contents"], "no_sourcemaps": True},
        "PyodideLockAddon": {
            "enabled": True,
            "wheels": [str(folder) for folder in wheels],
            "pyodide_lock_uv_options": {"extra_uv_args": ["--offline", "--no-index"]},
        },
    }
    site = {"jupyter-lite-schema-version": 0,
            "jupyter-config-data": {"appName": "gwlab", "litePluginSettings": {KERNEL_PLUGIN: {"disablePyPIFallback": True}}}}
    (lite_dir / "jupyter_lite_config.json").write_text(json.dumps(build, indent=2) + "\n", encoding="utf-8")
    (lite_dir / "jupyter-lite.json").write_text(json.dumps(site, indent=2) + "\n", encoding="utf-8")


def lock_path(out: Path) -> Path:
    """The site's Pyodide lock: the packages its kernel installs, from its own wheels."""
    return out / "static" / "pyodide-lock" / "pyodide-lock.json"


def patch_lock(out: Path) -> None:
    """Add :data:`FIGURE_NEEDS` to plotly's dependencies in the site's lock."""
    path = lock_path(out)
    lock = json.loads(path.read_text(encoding="utf-8"))
    plotly = lock["packages"]["plotly"]
    plotly["depends"] = sorted({*plotly["depends"], *FIGURE_NEEDS})
    path.write_text(json.dumps(lock, indent=2) + "\n", encoding="utf-8")


def build(out: Path = OUT, cache: Path = CACHE, notebooks: Path = NOTEBOOKS) -> dict[str, list[int]]:
    """Build the site of ``notebooks`` into ``out`` (replaced), downloading into ``cache`` only
    what it lacks. Returns the cells replaced by notes, per notebook. Raises :class:`BuildError`."""
    lite_dir = cache / "site"
    shutil.rmtree(lite_dir, ignore_errors=True)  # with it the build's .cache and .jupyterlite.doit.db
    shutil.rmtree(out, ignore_errors=True)
    lite_dir.mkdir(parents=True)
    unpack_pyodide(pyodide(cache), lite_dir / "static" / "pyodide")
    wheels = [site_wheels(cache), gwlab_wheel(cache / "gwlab-wheel")]
    replaced = contents(lite_dir / "contents", notebooks)
    configure(lite_dir, wheels)
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_OFFLINE": "1"}
    _run("jupyter lite build", [sys.executable, "-m", "jupyter", "lite", "build", "--lite-dir", str(lite_dir),
                                "--output-dir", str(out)], BUILD_TIMEOUT, cwd=lite_dir, env=env)
    patch_lock(out)
    return replaced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lite.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the site goes (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--if-stale", action="store_true", help="build only when the site is older than its inputs")
    args = parser.parse_args(argv)
    if args.if_stale and up_to_date(args.out):
        return 0
    started = time.monotonic()
    try:
        replaced = build(args.out)
    except BuildError as exc:
        print(f"lite.build: error: {exc}", file=sys.stderr)
        return 1
    skipped = sum(map(len, replaced.values()))
    print(f"site built in {args.out} in {time.monotonic() - started:.0f} s ({skipped} cells skipped in the browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
