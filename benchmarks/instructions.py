"""Item 1, counted rather than timed: CPU instructions per request, under valgrind.

Seconds of CPU per request move with everything else the machine runs; the instructions a
request takes do not. Each server of the throughput comparison (bare aiohttp, the same on
aiohttp's low-level server, the gateway with every policy on) runs under ``valgrind
--tool=cachegrind --cache-sim=no``, which counts every instruction the process executes, and
answers two batches of requests over four keep-alive connections. The difference between the
two totals, divided by the difference in requests, is what one request costs: start-up,
imports and shutdown cancel out. How closely counts repeat between runs is stated in
``benchmarks/README.md``.

Instructions are not time: code that misses the CPU caches more runs slower per
instruction, and in the running servers the gateway's code does (see ``benchmarks/README.md``).
So this is the compass for tuning, and the throughput rows stay the measure of the target.

``python -m benchmarks.instructions --forwarding`` counts forwarding the same way, each server
in front of one ``benchmarks.bare --completion`` upstream (not under valgrind): the gateway
forwarding to it, the bare aiohttp proxy (``benchmarks.bare --forward``: aiohttp's server and
client, nothing else) and, beside them, the bare low-level server answering the same body
itself and the gateway answering from zero-latency simulated providers. It prints
instructions per request; nothing is recorded.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.bare import PATH
from benchmarks.common import ROOT, Row, Server
from gwlab.clients import BODY

BATCHES, SMOKE_BATCHES = (300, 1300), (20, 60)
"""Requests of the short and the long run of each server."""
CONNECTIONS = 4
LOAD_GENERATOR = "http.client (connections in lockstep)"


def measure(smoke: bool = False) -> list[Row]:
    if shutil.which("valgrind") is None:
        raise RuntimeError("the instruction counts need valgrind (apt-get install valgrind)")
    batches = SMOKE_BATCHES if smoke else BATCHES
    gateway, size = _per_request(("benchmarks.gateway_server", "--zero-latency"), batches)
    bare, _ = _per_request(("benchmarks.bare", "--body-size", str(size)), batches)
    low_level, _ = _per_request(("benchmarks.bare", "--body-size", str(size), "--low-level"), batches)
    common = dict(load_generator=LOAD_GENERATOR, connections=CONNECTIONS)
    detail = {"requests": list(batches), "response_bytes": size, "loop": "asyncio"}
    return [
        Row("instructions_bare", bare, "instructions/request", detail=detail, **common),
        Row("instructions_bare_low_level", low_level, "instructions/request", detail=detail, **common),
        Row("instructions_gateway", gateway, "instructions/request", detail=detail, **common),
        Row("instructions_ratio", bare / gateway, "bare/gateway", detail={"against_low_level": low_level / gateway},
            **common),
    ]


def forwarding(batches: tuple[int, int] = BATCHES) -> dict[str, float]:
    """Instructions per request of each server of forwarding's comparison (see the module's
    docstring), by name."""
    with Server("benchmarks.bare", "--completion") as upstream:
        servers = {
            "gateway_forwarding": ("benchmarks.gateway_server", "--upstream", upstream.url),
            "bare_proxy": ("benchmarks.bare", "--forward", upstream.url),
            "gateway_simulated": ("benchmarks.gateway_server", "--zero-latency"),
            "bare_low_level": ("benchmarks.bare", "--completion", "--low-level"),
        }
        return {name: _per_request(args, batches)[0] for name, args in servers.items()}


def _per_request(args: tuple[str, ...], batches: tuple[int, int]) -> tuple[float, int]:
    """Instructions per request of the server ``python -m ARGS``, from its runs with each
    number of requests in ``batches``; and the size of its answers."""
    with ThreadPoolExecutor(len(batches)) as pool:  # one valgrind per core
        (few, _), (many, size) = pool.map(lambda requests: _count(args, requests), batches)
    return (many - few) / (batches[1] - batches[0]), size


def _count(args: tuple[str, ...], requests: int) -> tuple[int, int]:
    """Run ``python -m ARGS`` under cachegrind, send it ``requests`` chat requests and stop
    it; the instructions it executed in all, and the size of its answers."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cachegrind.out"
        process = subprocess.Popen(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
             sys.executable, "-m", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            line = process.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"{args[0]} did not start under valgrind (printed {line!r})")
            size = _post(int(line.split()[1]), requests)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            process.stdout.close()
        if process.returncode != 0:
            raise RuntimeError(f"{args[0]} under valgrind exited with {process.returncode}")
        summary = next(x for x in out.read_text().splitlines() if x.startswith("summary:"))
    return int(summary.split()[1]), size


def _post(port: int, requests: int) -> int:
    """Send ``requests`` chat requests, :data:`CONNECTIONS` at a time; the size of the answers."""
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(CONNECTIONS)]
    size = 0
    try:
        for _ in range(requests // CONNECTIONS):
            for connection in connections:
                connection.request("POST", PATH, BODY, {"Content-Type": "application/json"})
            for connection in connections:
                response = connection.getresponse()
                size = len(response.read())
                if response.status != 200:
                    raise RuntimeError(f"answer {response.status} under valgrind")
    finally:
        for connection in connections:
            connection.close()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description="Instructions per request under valgrind.")
    parser.add_argument("--forwarding", action="store_true", required=True,
                        help="count forwarding's servers (the measurement rows come from benchmarks.run)")
    parser.parse_args()
    for name, count in forwarding().items():
        print(f"{name:20} {count:12,.0f} instructions/request")


if __name__ == "__main__":
    main()
