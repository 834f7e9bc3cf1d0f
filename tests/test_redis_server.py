"""A redis-server of one's own: on a free port, the same port again after a stop (empty), a
taken port tried again elsewhere, bounded waits, and never left behind."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from gwlab import config, redis_server
from gwlab.redis_server import RedisServer, RedisServerError
from tests.conftest import require_tool
from tests.support import README, free_port, port_is_free

pytestmark = pytest.mark.timeout(60)


def _ask(port: int, *words: str) -> bytes:
    """One command to the Redis on ``port`` (RESP, one reply read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"".join([f"*{len(words)}\r\n".encode(),
                               *(f"${len(w)}\r\n{w}\r\n".encode() for w in words)]))
        return sock.recv(256)


def _gone(pid: int, within: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie no one reaped) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_it_serves_on_a_free_port_and_comes_back_empty_on_the_same_port():
    server = RedisServer(require_tool("redis-server"))
    with server:
        assert server.running and server.url == f"redis://127.0.0.1:{server.port}/0"
        assert _ask(server.port, "SET", "k", "v") == b"+OK\r\n"
        port, pid = server.port, server.process.pid
        server.stop()
        assert not server.running and _gone(pid, 5) and port_is_free(port)
        server.start()
        assert server.port == port and _ask(port, "GET", "k") == b"$-1\r\n"  # nothing was kept
        server.start()  # running: nothing happens
        assert server.port == port
        assert repr(server) == f"redis-server at redis://127.0.0.1:{port}/0 (running)"
    assert not server.running and port_is_free(port)
    server.stop()  # twice is safe


def test_a_port_taken_before_the_server_binds_it_is_given_up_for_another(monkeypatch):
    binary = require_tool("redis-server")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(redis_server, "_free_port", lambda: next(ports, 0) or free_port())
        with RedisServer(binary) as server:
            assert server.port != taken and _ask(server.port, "PING") == b"+PONG\r\n"
            server.stop()
            # A restart keeps its port: taken meanwhile, it fails naming it.
            with socket.socket() as again:
                again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                again.bind(("127.0.0.1", server.port))
                again.listen()
                taken_now = f"did not start on port {server.port}: it exited .is the port taken"
                with pytest.raises(RedisServerError, match=taken_now):
                    server.start()
            assert not server.running


def test_a_server_that_never_answers_fails_the_start_after_each_try_s_timeout(monkeypatch, tmp_path):
    mute = tmp_path / "mute-redis-server"
    mute.write_text("#!/bin/sh\nexec sleep 60\n")
    mute.chmod(mute.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(config, "REDIS_START_TIMEOUT", 0.2)
    monkeypatch.setattr(config, "REDIS_START_TRIES", 2)
    server = RedisServer(str(mute))
    began = time.monotonic()
    with pytest.raises(RedisServerError, match=r"did not start on port \d+: it did not answer PING within 0.2 s"):
        server.start()
    assert 0.4 <= time.monotonic() - began < 0.4 + 2.0  # two tries, each bounded
    assert not server.running


def test_without_redis_server_the_error_says_where_to_get_it(monkeypatch):
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    with pytest.raises(RedisServerError, match="redis-server is not installed .Debian: apt-get install redis-server"):
        RedisServer()


def test_a_server_left_running_ends_with_the_interpreter():
    require_tool("redis-server")
    started = subprocess.run(
        [sys.executable, "-c", "from gwlab.redis_server import RedisServer\n"
                               "server = RedisServer()\nserver.start()\nprint(server.process.pid, server.port)"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert started.returncode == 0, started.stderr
    pid, port = map(int, started.stdout.split())
    assert _gone(pid, 5) and port_is_free(port)


def test_the_readme_states_the_bounds_of_a_start():
    text = " ".join(README.split())
    assert f"waits at most {config.REDIS_START_TIMEOUT:g} s for PING (`REDIS_START_TIMEOUT`)" in text
    assert f"{config.REDIS_START_TRIES} ports in all (`REDIS_START_TRIES`)" in text
