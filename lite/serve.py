"""Serve the browser site (``build/lite``) on loopback: ``make lite-serve``.

Run as ``python -m lite.serve [--port N] [--dir DIR]``; prints the URL, serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lite.build import OUT

HOST = "127.0.0.1"
PORT = 0
"""The default port: 0 takes a free one."""
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}
"""The types a browser insists on (module scripts, WebAssembly), whatever this machine's
``mimetypes`` says."""


class _Quiet(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def log_message(self, format: str, *args) -> None:
        """No line per request."""


def server(directory: Path = OUT, port: int = PORT) -> ThreadingHTTPServer:
    """An HTTP server of ``directory`` on 127.0.0.1:``port`` (bound, not yet serving).
    Raises :class:`FileNotFoundError` when ``directory`` holds no built site, and
    :class:`OSError` when the port is taken."""
    if not (directory / "jupyter-lite.json").is_file():
        raise FileNotFoundError(f"no site in {directory}: build it first (make lite)")
    return ThreadingHTTPServer((HOST, port), functools.partial(_Quiet, directory=str(directory)))


def url(httpd: ThreadingHTTPServer) -> str:
    """The address of the site's JupyterLab on ``httpd``."""
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}/lab/index.html"


def serve_in_thread(directory: Path = OUT, port: int = PORT) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """:func:`server`, serving in a daemon thread; stop it with ``httpd.shutdown()``."""
    httpd = server(directory, port)
    thread = threading.Thread(target=httpd.serve_forever, name="lite-serve", daemon=True)
    thread.start()
    return httpd, thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lite.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=PORT, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--dir", type=Path, default=OUT, help="the built site (default build/lite)")
    args = parser.parse_args(argv)
    try:
        httpd = server(args.dir, args.port)
    except OSError as exc:
        print(f"lite.serve: error: {exc}", file=sys.stderr)
        return 1
    print(f"gwlab in the browser: {url(httpd)}  (Ctrl-C stops)", flush=True)
    with httpd:
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
