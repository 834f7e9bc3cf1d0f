"""A scenario: every parameter of the gateway, its providers and its clients.

Every default lives here, once, as a named constant; the README's table of defaults and
``scenarios/seed.toml`` repeat them and a test keeps all three equal.

A scenario comes from a TOML file, a dict (a notebook cell, ``PATCH /admin/config``) or the
defaults. All three go through :func:`from_dict`, so a bad value gets the same message
wherever it comes from: the source, the dotted field name, the value and what is allowed.
Runtime changes and scripted events are *patches*: dicts of the same shape, deep-merged into
a scenario and validated as a whole (:func:`merge`).

The TOML shape::

    [gateway]   balancer, timeout, stream_idle_timeout, fallback
    [limiter]   rate, burst, tpm, default_max_tokens,
                backend, redis_url, redis_prefix, redis_timeout, redis_failure
    [breaker]   enabled, failure_threshold, base_delay, max_cooldown, half_open_max_calls,
                count_rate_limited
    [providers.NAME]  weight, latency, distribution, p99, error_rate, outage,
                      ttft, ttft_distribution, ttft_p99, decode_rate,
                      output_tokens, output_distribution, output_p99, stream_error_rate,
                      capacity, queue, rpm, tpm,
                      kind, base_url, api_key_env, model, connections, connect_timeout
    [workload]  mode, clients, think_time, rate, max_in_flight, stream_share, max_tokens, prompt_tokens
    [retry]     attempts, retry_on, base_delay, max_delay, jitter, deadline,
                budget_ratio, budget_min_per_second, budget_window
    [[events]]  at = SECONDS, then any patch, e.g. providers.p1.outage = "error"

Every number has a finite range (the ``MIN_*`` and ``MAX_*`` constants below, kept in each
field's metadata), chosen so that everything computed from a scenario stays finite: waits,
sums of weights, latency samples, cooldowns, headers. The README lists them.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import numbers
import re
import sys
import tomllib
from dataclasses import dataclass, field
from decimal import Context, Decimal
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from gwlab import balancer
from gwlab.limiter import MAX_BURST, MAX_PER_MINUTE, MAX_RATE, MIN_RATE  # the ranges in which the limiter is exact

# The seed system's numbers (the Go gateway simulator gwlab follows): bucket, providers, clients.
RATE = 1000.0
"""Token-bucket refill rate, tokens (requests) per second."""
BURST = 1000.0
"""Token-bucket capacity; the bucket starts full."""
CLIENTS = 100
"""Closed-loop clients of ``gwlab run``."""
SEED_PROVIDERS = (
    # name, weight, mean latency (s), error rate
    ("p1", 70.0, 0.1, 0.05),
    ("p2", 20.0, 0.5, 0.10),
    ("p3", 10.0, 2.0, 0.20),
)

# gwlab's own choices where the seed gives no number (each is in the README's table of defaults).
FAILURE_THRESHOLD = 3
"""Consecutive failures that open a breaker."""
BASE_DELAY = 1.0
"""First cooldown in seconds; each further trip doubles it."""
MAX_COOLDOWN = 30.0
"""Cap on the cooldown in seconds."""
HALF_OPEN_MAX_CALLS = 1
"""Probes a half-open breaker lets through at once."""
TIMEOUT = 10.0
"""Provider call timeout in seconds; a slower call answers 504 and counts as a failure. For a
stream it bounds the time to the first token."""
STREAM_IDLE_TIMEOUT = 60.0
"""Seconds a stream may go without a token once it has begun (its end included: from its
last token to it); past them it fails as a mid-stream error (nginx's ``proxy_read_timeout``:
60 s between two reads, bytes where this counts tokens)."""
RETRY_ATTEMPTS = 1
"""Attempts the gateway makes at a request: 1, no retries, as in the seed (``retry.attempts``)."""
RETRY_ON = (429, 502, 504)
"""The answers the gateway retries when ``retry.attempts`` > 1 (DESIGN): a provider's 429, a
failure and a timeout."""
RETRY_BASE_DELAY = 0.025
"""Seconds of the first retry's backoff, doubling with each retry: Envoy's default
``base_interval`` (25 ms)."""
RETRY_MAX_DELAY = 0.25
"""The backoff's cap in seconds: Envoy's default ``max_interval``, ten times the base."""
RETRY_JITTER = "full"
"""How the backoff is spread (:data:`gwlab.retry.JITTERS`): Envoy's, a uniform draw below it."""
RETRY_DEADLINE = 15.0
"""Seconds from a request's arrival after which the gateway starts no retry of it: Envoy's
default route timeout."""
RETRY_BUDGET_RATIO = 0.2
"""Retries a retry budget allows, as a share of the requests in its window: Finagle's
``RetryBudget`` default (20 %)."""
RETRY_BUDGET_MIN_PER_SECOND = 10.0
"""Retries a second a retry budget allows whatever the requests: Finagle's default floor."""
RETRY_BUDGET_WINDOW = 10
"""Seconds a retry budget counts requests and retries over: Finagle's default ``ttl``."""
MAX_ATTEMPTS = 10
"""Most attempts at one request: beyond it retries only multiply load (LiteLLM, Envoy and
the openai SDK all default to 3 or fewer)."""
BALANCER = "weighted_random"
"""The seed's load-balancing policy."""
FALLBACK = "soonest"
"""What the gateway does when no provider is eligible (every breaker open): the seed's rule,
a probe of the provider whose cooldown ends soonest."""
DISTRIBUTION = "fixed"
"""Provider latency distribution: the seed's latencies are fixed."""
THINK_TIME = 0.0
"""Seconds a closed-loop client waits between an answer and its next request."""
OPEN_RATE = 1000.0
"""Offered requests per second in open-loop mode (when ``mode = "open"`` without ``rate``)."""
MAX_IN_FLIGHT = 3000
"""Requests the clients keep outstanding at most in open-loop mode, in total over the load
generator's worker processes (the simulator honours the same cap). An arrival that finds
this many outstanding is not sent and is counted as saturated, as k6's ``maxVUs`` drops
iterations: a gateway that cannot keep up then costs a bounded number of sockets on both
sides instead of one more for every overdue arrival. It is the most the seed system can
hold: its bucket admits at most ``BURST + RATE * t`` requests in ``t`` seconds and its
slowest provider answers in 2 s, so no workload reaches the cap against seed providers."""
DECODE_RATE = 50.0
"""Output tokens per second a provider with token timing (``ttft``) streams to each call:
the order of a hosted model's decode speed for one stream."""
STREAM_FRAME_INTERVAL = 0.02
"""Seconds a stream's frames are at least apart: a token per frame at decode rates up to 50
tokens per second, and faster ones grouped, as many tokens a frame as come in 20 ms (DESIGN,
"LLM traffic"): frames at 1000 tokens per second would cost more to frame than to carry."""
MAX_OUTPUT_TOKENS = 1_000_000
"""Most output tokens one answer may hold (``output_tokens``, its p99, ``max_tokens``): a
hundred times the longest outputs hosted models give, and a bound on every drawn length."""
MAX_PROMPT_TOKENS = 200_000
"""Most tokens of a workload's prompt (``workload.prompt_tokens``): the context window of
the largest common models, and a live client's request of that many (four characters a
token) still fits in :data:`MAX_BODY`."""
TPM = 0
"""Tokens per minute the gateway admits (``limiter.tpm``): 0, no limit on tokens, as in the
seed, whose limit is on requests only."""
DEFAULT_MAX_TOKENS = 4096
"""Output tokens reserved for a request that caps none (no ``max_tokens``) while the tokens
limit is on: the longest output of gpt-3.5-turbo and gpt-4-turbo. OpenAI counts a request
against its limit as its ``max_tokens`` (or its prompt's estimate when larger), and Azure
OpenAI reserves a model's longest output when a request gives none; what a request did not
use is given back when it ends."""
LIMITER_BACKEND = "local"
"""Where the gateway keeps its limits (``limiter.backend``): ``"local"``, in the gateway's own
process (each replica its own buckets), or ``"redis"``, one pair of buckets in Redis shared by
every gateway using the same Redis and prefix (DESIGN, "Upstreams and replicas")."""
REDIS_URL = "redis://127.0.0.1:6379/0"
"""The Redis of ``limiter.backend = "redis"``: redis-server's own default port, database 0."""
REDIS_PREFIX = "gwlab"
"""The prefix of the shared buckets' keys in Redis: ``PREFIX:bucket:requests`` and
``PREFIX:bucket:tokens``."""
REDIS_TIMEOUT = 0.05
"""Seconds one call to Redis may take before the limiter counts it failed and follows
``limiter.redis_failure`` (DESIGN, "Upstreams and replicas"): two orders of magnitude over a
loopback round trip, and what a request may pay at most while Redis hangs."""
REDIS_FAILURE = "open"
"""What the gateway does while Redis cannot be reached: ``"open"`` admits (counted in
``gwlab_limiter_backend_errors_total``), ``"closed"`` answers 429 ``limiter_unavailable``."""
REDIS_RECONNECT_BASE = 0.1
"""Seconds the gateway lets pass after a failed Redis call before it tries Redis again,
doubling after each failure in a row up to :data:`REDIS_RECONNECT_MAX`; meanwhile every
admission follows ``limiter.redis_failure`` at once, paying no timeout."""
REDIS_RECONNECT_MAX = 2.0
"""The longest wait between two tries of an unreachable Redis, seconds: a Redis back on its
feet is used again within two seconds."""
REDIS_LOG_INTERVAL = 10.0
"""Seconds between two log lines saying the limiter's Redis is failing (with the count of
failed calls): once per interval, never once per request."""
REDIS_START_TIMEOUT = 10.0
"""Seconds a redis-server started by :class:`gwlab.redis_server.RedisServer` has to answer
PING before the start fails."""
REDIS_START_TRIES = 5
"""Free ports :class:`gwlab.redis_server.RedisServer` tries before giving up: another process
may take the one chosen before the server binds it."""
LIMITER_BACKENDS = ("local", "redis")
REDIS_FAILURES = ("open", "closed")
RESTART_ONLY = ("limiter.backend", "limiter.redis_url")
"""Fields no patch can change (``PATCH /admin/config``, ``Gateway.configure``, scripted
events): a running gateway would have to move its buckets to another store. A provider's
own are :data:`FIXED_FIELDS`."""
CLIENT_RETRY_POLICY = "none"
"""How the clients retry a failed request (``workload.retry_policy``): not at all, as the
seed's clients do."""
CLIENT_RETRIES = 2
"""Retries a client makes after a request's first attempt (``workload.retries``): the
``openai`` SDK's ``DEFAULT_MAX_RETRIES``."""
CLIENT_RETRY_DELAY = 0.5
"""Seconds before a client's first retry (``workload.retry_delay``; the wait of every retry
for ``fixed``): the ``openai`` SDK's ``INITIAL_RETRY_DELAY``."""
CLIENT_RETRY_MAX_DELAY = 8.0
"""The most seconds a client's backoff grows to (``workload.retry_max_delay``): the
``openai`` SDK's ``MAX_RETRY_DELAY``."""
OPENAI_MAX_RETRY_AFTER = 120.0
"""The longest ``retry-after`` the ``openai`` SDK (3.57) waits for; past it, it does not
retry (``MAX_RETRY_AFTER_DELAY`` in its ``_constants.py``)."""
UPSTREAM_MAX_RETRY_AFTER = 3600.0
"""The longest wait a real upstream's 429 is passed on with, in seconds (an hour): a longer
``retry-after-ms`` or ``Retry-After`` is clamped to it, so that the gateway's own headers and
retry waits stay finite and of sane size."""
CLIENT_TIMEOUT = 0.0
"""Seconds a client waits for an answer before it gives up on the attempt
(``workload.timeout``): 0, no timeout of its own, as the seed's clients (the gateway's
timeout decides)."""
ADAPTIVE_K = 2.0
"""The multiplier K of client-side adaptive throttling (``workload.adaptive_k``): a client
rejects locally with probability max(0, (requests - K × accepts) / (requests + 1)); the
Google SRE book's value ("Handling Overload", chapter 21)."""
ADAPTIVE_WINDOW = 30
"""Seconds of history adaptive throttling counts (``workload.adaptive_window``): Envoy's
admission control's default ``sampling_window``."""
PERSISTS_FOR = 10.0
"""A storm *persists* when goodput per user request stays below :data:`COLLAPSED_SHARE` of its
level before the trigger for this many times the trigger's length after it ends (DESIGN,
"Retries and fallbacks")."""
COLLAPSED_SHARE = 0.5
RECOVERED_SHARE = 0.9
"""A run has *recovered* once goodput per user request is back to this share of its level
before the trigger for :data:`RECOVERED_FOR` seconds (DESIGN, "Retries and fallbacks")."""
RECOVERED_FOR = 30.0
JUDGED_BIN = 5.0
"""Seconds of each bin in which goodput per user request is judged for "persists" and
"recovered": five one-second bins, so that a second in which few requests ended does not
decide alone."""
PROMPT_TOKENS = 2
"""Prompt tokens of each request of a workload (``workload.prompt_tokens``): a live
client's one message ``"Hello"`` by the gateway's estimate (one token per four characters,
rounded up)."""
SEED = 1
"""Random seed of every command when none is given."""
SIM_DURATION = 60.0
"""Simulated seconds of ``gwlab.simulate`` when no duration is given."""
BIN_WIDTH = 1.0
"""Width in seconds of a simulation's time bins."""
LAB_BIN_WIDTH = 0.5
"""Width in seconds of the time bins of a notebook's live charts."""
LAB_WINDOW = 60.0
"""Seconds of history a notebook's live charts keep (older bins roll out)."""
LAB_REDRAW = 0.3
"""Seconds between two redraws of a notebook's live charts (about 3 per second)."""
LAB_MODES = ("live", "virtual")
"""How a notebook's lab runs: ``live``, a real gateway, metrics server and clients on sockets
in a background thread; ``virtual``, the simulator on the kernel's own event loop at
wall-clock pace, seeded and without sockets."""
LAB_MODE = "virtual" if sys.platform == "emscripten" else "live"
"""The lab's mode when none is given and the environment sets no ``GWLAB_LAB_MODE`` (see
:func:`gwlab.lab.start`): ``virtual`` in the browser (Pyodide has no sockets), ``live``
elsewhere."""
EXERCISE_CALL_TIMEOUT = 10.0
"""Seconds a tutorial's check waits for one call of the learner's function (on a POSIX main
thread, where a timer signal can stop it: a Jupyter kernel's cells run there) before its
verdict says the function did not return: a loop that never ends is a verdict, not a
kernel to interrupt."""
VIRTUAL_STEP = 0.1
"""Wall seconds between two steps of a virtual lab: each advances its virtual time by the
wall time elapsed since the one before."""
VIRTUAL_CATCH_UP = 1.0
"""The most virtual seconds one step of a virtual lab advances: after a cell that held the
kernel for minutes, it goes on from where it was rather than run those minutes at once."""
HOST = "127.0.0.1"
"""The address gateways listen on: this machine only."""
MAX_HOST_NAME = 253
"""The longest host name, in characters (RFC 1035's 255 bytes on the wire, less their framing)."""
PORT = 8080
METRICS_PORT = 9090
MAX_PORT = 65535
"""The largest TCP port number (0 asks for any free port)."""
CLIENT_GRACE = 2.0
"""Seconds the requests in flight get to finish when a live run stops; the gateway cuts off
the rest, which count as 499."""
CUT_OFF_MARGIN = 1.0
"""Seconds past its gateway's grace a stopping client waits for each request in flight to be
answered or cut off: the gateway alone decides which answers came in time, and both count
each request alike. A request neither answered nor closed by then (a gateway that does not
answer) its client counts 499 itself."""
LOG_LEVEL = "WARNING"
"""Log level of the command line; INFO adds the breaker transitions."""
MODEL = "gwlab-sim"
"""The model name the gateway lists at ``GET /v1/models`` (any requested model is echoed)."""
MAX_BODY = 1024 * 1024
"""Largest request body the gateway reads, in bytes; a bigger one is answered 413."""
MAX_SCENARIO_BYTES = 16 * 1024 * 1024
"""Largest scenario file read, in bytes: hundreds of thousands of scripted events (a seed
scenario is a few kilobytes), and a path to an endless file (``/dev/zero``) is refused
after reading that much rather than filling memory."""
STOP_GRACE = 5.0
"""Seconds a stopping gateway lets requests in flight finish before cutting them off."""
REPLICAS = 1
"""Gateway processes ``gwlab serve`` and ``gwlab run`` start, and gateways ``gwlab simulate``
models (``--replicas``): one, the plain gateway."""
MAX_REPLICAS = 64
"""The most replicas one command starts (each a process with a gateway and its metrics
server) or simulates."""
CHILD_START_TIMEOUT = 60.0
"""Seconds the child processes of a command (the load generator's workers, the replicas)
get to start and say they are ready (a worker with its HTTP session open, a replica
listening) before the start fails and every child is ended: a Python process importing
gwlab and its libraries, far less than this even with :data:`MAX_REPLICAS` replicas
starting at once on a busy machine, so a child that has not said so within a minute is taken
for hung."""
CHILD_EXIT_TIMEOUT = 5.0
"""Seconds a stopping child process (a worker, a replica) gets, after its grace, to report
and exit before it is killed; then as long again, at most, to see it gone (a killed process
ends at once unless the kernel holds it in an uninterruptible wait). As long as the
gateway's own stop grace (:data:`STOP_GRACE`): a child has nothing left to do by then but
send its last counts and close."""
REPLICA_REPLY_TIMEOUT = 10.0
"""Seconds a replica gets to answer its parent (a configuration change, a reset, a
snapshot, its counts at a run's end) before it is taken for stalled: the parent goes on
without its answer, and an admin change it did not confirm answers 503
``replicas_unavailable``. As long as a provider call may take by default (:data:`TIMEOUT`):
an admin change waits no longer for a replica than a request waits for a provider. A
replica waits twice this for the parent's answer to an admin request it passed up, so that
the parent's own wait ends first."""
REPLICA_BACKLOG = 16 * 1024 * 1024
"""Bytes of messages (configuration changes, resets, requests for its state) the parent
holds for one replica that reads none of them (stopped, swamped): the parent never waits
for a replica to read, so that its loop, its other replicas and its signals go on; past
this the replica, which could no longer be kept in step, is killed and the others go on
without it. About ten thousand changes."""
SCRAPE_CONFIG = "gwlab-replicas.yml"
"""Where ``--replicas`` writes Prometheus's scrape configuration for the replicas' metrics
servers (``--scrape-config``), relative to the working directory."""
SCRAPE_INTERVAL = 5.0
"""Seconds between two scrapes in the Prometheus configurations gwlab gives (the repository's
``prometheus.yml``, and the one ``--replicas`` writes)."""
FINAL_SCRAPE = 5.0
"""Seconds the metrics server of an ending ``gwlab run`` stays up for one last scrape, when
something scraped it during the run: one scrape interval of the README's Prometheus
configuration, so the run's last seconds reach Prometheus. It ends at that scrape."""

# What one client can hold of the gateway (the README's "Bounds"). The anchors are the
# defaults of mature servers: nginx closes an idle keep-alive connection after 75 s and
# Apache's mod_reqtimeout gives a request 20 s for its head and 20 s for its body.
KEEPALIVE_TIMEOUT = 75.0
"""Seconds a connection may wait idle for its next request before the gateway closes it
(nginx's ``keepalive_timeout``; longer than the 15 s after which aiohttp's and most clients
drop an idle connection themselves, so a client never sends into a connection being closed)."""
HEADER_TIMEOUT = 20.0
"""Seconds from the first byte of a request to the end of its head; a slower one is answered
408 and closed (Apache's ``RequestReadTimeout header=20``; it stops slowloris)."""
BODY_TIMEOUT = 20.0
"""Seconds within which a request body must have arrived whole once the gateway starts
reading it; a slower one is answered 408 and closed (Apache's ``RequestReadTimeout
body=20``). Bodies are at most :data:`MAX_BODY` bytes: 20 s asks for 52 KB/s."""
SEND_TIMEOUT = 60.0
"""Seconds an answer may wait for its client to read what the gateway has already written
(nginx's ``send_timeout``): a client that reads nothing for that long while the socket's
buffers are full is cut off (499), so that it cannot hold its provider call, and the
provider slot or breaker probe that call holds, for ever."""
MAX_CONNECTIONS = 10_000
"""Most client connections the gateway holds at once. At the limit it closes idle keep-alive
connections (as nginx does when its ``worker_connections`` run out) and, if none is idle,
stops accepting until one closes; new connections wait in the listen backlog."""
MIN_IDLE_TO_CLOSE = 1.0
"""Seconds a connection must have sat idle, since it was accepted or since its last answer,
before the gateway at :data:`MAX_CONNECTIONS` closes it to make room for a new client: a
connection just accepted may not have received its client's request yet, and one just
answered may be carrying the next; closing either would drop a request unanswered. A busy
client can take a good part of a second to send its request once connected, and a flood of
idle sockets waiting in the backlog still gives way, the connection limit's worth each
second."""
FD_RESERVE = 64
"""File descriptors the gateway's connections leave free under the process's limit
(``RLIMIT_NOFILE``), whatever :data:`MAX_CONNECTIONS` says: room for the metrics server,
the log, the event loop and the load generator's pipes, so they keep working when clients
hold every connection the gateway allows."""
METRICS_MAX_CONNECTIONS = 16
"""Most connections the metrics server holds at once, within :data:`FD_RESERVE`, under the
same idle, head and send timeouts as the gateway's: Prometheus scrapes over one connection
it keeps, and a few scrapers and a browser need no more. Unbounded, a flood of sockets on
the metrics port took every descriptor the process had, and the gateway answered nothing."""
BACKLOG = 511
"""Connections the kernel queues for the gateway before it accepts them (nginx's ``listen``
backlog); at the connection limit, new clients wait there."""
ACCEPT_RETRY = 1.0
"""Seconds the gateway waits before accepting again when the process is out of descriptors
and no connection of its own has closed meanwhile (asyncio's own accept loop waits 1 s)."""
UPSTREAM_CONNECTIONS = 100
"""Most connections the gateway holds open to one real upstream (``kind = "openai"``) at
once; a call that finds them all busy waits for one, within its ``gateway.timeout``
(aiohttp's ``TCPConnector`` default ``limit``)."""
UPSTREAM_CONNECT_TIMEOUT = 5.0
"""Seconds a real upstream has to accept a connection; past them the call fails (502), so a
host that is down costs a failure, not a whole ``gateway.timeout`` (Envoy's default cluster
``connect_timeout``)."""
UPSTREAM_KEEPALIVE = 15.0
"""Seconds a connection to a real upstream may sit idle and still carry a call; an older one
is closed rather than used, before the upstream's own keep-alive timeout can close it under
a request (aiohttp's ``TCPConnector`` default ``keepalive_timeout``)."""
UPSTREAM_MAX_BODY = 16 * 1024 * 1024
"""Largest answer, or stream frame, the gateway reads from a real upstream, in bytes; a
larger one fails the call (502): sixteen times the largest request it reads
(:data:`MAX_BODY`), room for the longest answers models give."""
LIMIT_LOG_INTERVAL = 10.0
"""Seconds between two log lines saying the gateway is at its connection limit (or out of
descriptors): once per interval, with counts, never once per connection."""

# The allowed ranges. Each is finite, and chosen so that everything computed from the
# scenario stays finite too: waits, sums of weights, latency samples, cooldowns, headers.
MAX_SECONDS = 365 * 24 * 3600
"""Longest time any field or run may hold, in seconds (one year): far beyond any experiment,
and a year in microseconds (3.2e13) stays below 2**53, so every time is exact to the
microsecond, in floats and in the limiter's integer clock."""
MIN_SECONDS = 1e-6
"""Shortest time that must be > 0 (a timeout, a cooldown, a run), in seconds: one
microsecond, the clock's resolution; a shorter one would not move the clock."""
MAX_WEIGHT = 1e6
"""Largest provider weight: with :data:`MAX_PROVIDERS` of them the total stays exact."""
MAX_PROVIDERS = 100
"""Most providers in a scenario: keeps the sum of weights (at most 1e8) and every
per-request scan of the providers small."""
MAX_P99_RATIO = 1000.0
"""Largest log-normal p99 / median: then sigma <= 2.97, and even the most extreme normal draw
the generator can make (|Z| < 8.3) gives a finite latency (at most 1e11 times the median)."""
MAX_CLIENTS = 100_000
"""Most closed-loop clients: a thousand times the seed's 100."""
MAX_COUNT = 1_000_000
"""Largest count of calls (``failure_threshold``, ``half_open_max_calls``): beyond any run."""
MAX_BINS = 100_000
"""Most time bins in one simulation (``duration / bin_width``): each bin keeps its counts in
memory, about a kilobyte, so a run's time series stays near 100 MB at most."""
MAX_SWEEP_RUNS = 100_000
"""Most simulations in one parameter sweep (grid points times seeds, :mod:`gwlab.sweep`): the
sweep keeps a row of results per run until it ends, and checks every point before it runs
one, so its memory and its start grow with the runs; a larger study is several sweeps."""
SWEEP_OUTSTANDING_PER_WORKER = 2
"""Runs a sweep hands an executor at a time, per worker: one running and one waiting, so a
worker never idles for want of a run, and no more of the grid sits in queues."""
MAX_REDIS_TIMEOUT = 10.0
"""The longest ``limiter.redis_timeout``, seconds: every admission may wait that long."""
MAX_PREFIX = 100
"""The longest ``limiter.redis_prefix``, characters."""
MAX_REDIS_DB = 2**31 - 2
"""The largest database number in ``limiter.redis_url``: a Redis has at most 2**31 - 1
databases (its ``databases`` setting), numbered from 0."""
MAX_SEED = 2**64 - 1
"""Largest random seed: 64 bits name more runs than anyone makes, and keep a seed printable."""
MAX_MODEL_LENGTH = 256
"""The longest model name accepted, in a request or a provider's ``model`` (model names are
a few dozen characters). It bounds the memory held by the cache of encoded model names."""
SHOWN_DIGITS = 40
"""Most digits of a whole number an error message shows as given: twice those of the largest
bound (:data:`MAX_SEED`); a longer one is shown rounded to six digits (``1E+400``), so that a
message stays one short line."""
SHOWN_CHARS = 300
"""Most characters of a string (a value, a key) that an error message repeats, and about the
most of an array of numbers: a longer one is shown cut, ending in ``...``, so that a message
stays one line of bounded length whatever a file or a request holds. It is above the longest
strings a field takes (:data:`MAX_MODEL_LENGTH`, :data:`MAX_HOST_NAME`), so that a value
refused for being a little too long is still shown whole."""
SHOWN_PATHS = 3
"""Most of a sweep's grid paths a message names with their values when it names a point
(``workload.rate=500, retry.attempts=3, breaker.enabled=true and 197 more paths``), so
that a grid of many paths still gives one short line (the field at fault is named after
it)."""
MAX_DEPTH = 3
"""Deepest nesting of tables in a scenario or patch: ``providers.NAME.field`` is a value in
the third table. Deeper data is refused before it is walked."""

DISTRIBUTIONS = ("fixed", "exponential", "lognormal")
OUTAGES = ("none", "error", "hang")
FALLBACKS = ("soonest", "panic", "reject")
JITTERS = ("none", "full", "equal", "decorrelated")
MODES = ("closed", "open")
KINDS = ("simulated", "openai")
"""What a provider is: simulated by gwlab, or a real OpenAI-compatible server it forwards to."""
UPSTREAM_NAMES = ("base_url", "api_key_env", "model")
"""A provider's fields that name what a real upstream (``kind = "openai"``) is: empty for a
simulated provider."""
FIXED_FIELDS = ("kind", "base_url", "api_key_env", "connections")
"""A provider's fields no patch can change (as :data:`RESTART_ONLY`): they make its connection
pool and key."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CLIENT_RETRY_POLICIES = ("none", "openai_sdk", "fixed", "exponential_jitter", "adaptive")


class ConfigError(ValueError):
    """A scenario value that is not allowed. The message is one line, ready to show."""


def _spec(allowed: str | Callable[[Any], str], check, kind=float) -> dict:
    """A field's metadata: ``allowed`` says what it may hold in a message (or, a function,
    what the value refused was expected to be), ``check`` says whether a value of ``kind``
    fits."""
    return {"allowed": allowed, "check": check, "kind": kind}


def _range(kind: type, lo: float, hi: float) -> dict:
    """A number from ``lo`` to ``hi``, both allowed. Comparing is exact for any int, however
    large, and false for NaN, so nothing is converted to float before it is known to fit."""
    what = "a whole number" if kind is int else "a number"
    spec = _spec(f"{what} >= {_bound(lo)} and <= {_bound(hi)}", lambda v: lo <= v <= hi, kind)
    return {**spec, "lo": lo, "hi": hi}


def _bound(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


_SECONDS = _range(float, 0, MAX_SECONDS)
_POSITIVE_SECONDS = _range(float, MIN_SECONDS, MAX_SECONDS)
_RATE = _range(float, MIN_RATE, MAX_RATE)
_COUNT = _range(int, 1, MAX_COUNT)

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _host(value: str) -> bool:
    """Whether ``value`` is an address to listen on: an IP address, IPv6 without brackets
    (a zone allowed), or a host name (labels of letters, digits, ``-`` and ``_``, 1 to 63
    characters each, :data:`MAX_HOST_NAME` in all, an ending ``.`` allowed)."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    name = value.removesuffix(".")
    return len(name) <= MAX_HOST_NAME and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


RUN_RANGES = {
    "duration": _POSITIVE_SECONDS,
    "bin_width": _POSITIVE_SECONDS,
    "seed": _range(int, 0, MAX_SEED),
    "replicas": _range(int, 1, MAX_REPLICAS),
    "port": _range(int, 0, MAX_PORT),
    "timeout": _POSITIVE_SECONDS,
    "max_connections": _COUNT,
}
"""The ranges of a run's own arguments, outside the scenario: ``gwlab.simulate``'s
``duration`` (also ``--duration``), ``bin_width``, ``seed`` (also ``--seed``) and
``replicas`` (also ``--replicas``), ``gwlab.lab.start``'s ``port`` and ``metrics_port``, and
the bounds of ``serve`` and ``run``: ``--keepalive-timeout``, ``--header-timeout``,
``--body-timeout`` and ``--send-timeout`` (each a ``timeout``) and ``--max-connections``."""
_BOOL = _spec("true or false", lambda v: True, bool)
RUN_ARGUMENTS = {
    **RUN_RANGES,
    "host": _spec("an address to listen on: an IP address (IPv6 without brackets) or a host name, such as "
                  f"{HOST!r}, '0.0.0.0' (every IPv4 interface), '::' or 'localhost'", _host, str),
    "keep_requests": _BOOL,
}
"""What :func:`run_argument` checks: :data:`RUN_RANGES`, the address a gateway listens
on, ``gwlab.lab.start``'s ``host`` (also ``--host``), and :func:`gwlab.simulate`'s
``keep_requests``."""


def _choice(options: Callable[[], tuple[str, ...]]) -> dict:
    return _spec(lambda _: "one of " + ", ".join(repr(o) for o in options()), lambda v: v in options(), str)


REDACTED = "***"
"""What gwlab shows in place of a password."""


def redacted(url: str) -> str:
    """``url`` as gwlab shows it (the admin API, summaries, log lines, error messages): the
    password in its user part (``redis://user:PASSWORD@host``) and in a ``password`` query
    argument (which redis-py reads too) replaced by :data:`REDACTED`, everything else kept as
    given, e.g. ``redis://:***@10.0.0.5:6379/0``. Of a value with no ``://``, all before its
    last ``@`` is replaced."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return f"{REDACTED}@{url.rpartition('@')[2]}" if "@" in url else url
    # Split as urllib.parse does (and redis-py with it): the host part ends at / ? or #.
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    user, colon, _ = userinfo.partition(":")
    before, hash_, fragment = rest[end:].partition("#")
    path, question, query = before.partition("?")
    query = "&".join(f"{name}={REDACTED}" if equals and unquote_plus(name) == "password" else piece
                     for piece in query.split("&") for name, equals, _ in [piece.partition("=")])
    return (f"{scheme}://{user}{colon and ':' + REDACTED}{at}{host}"
            f"{path}{question}{query}{hash_}{fragment}")


_REDIS_URL_FORM = "a redis:// or rediss:// URL (or unix:// for a socket)"
REDIS_QUERY = ("db", "username", "password")
"""The query arguments ``limiter.redis_url`` may hold; redis-py reads every one as a setting
of its connections, and gwlab sets the rest itself (timeouts, retries)."""


def _redis_url(url: str) -> str | None:
    """What ``limiter.redis_url`` is expected to be that ``url`` is not, or ``None`` when it is
    a Redis URL that redis-py's ``from_url`` reads as written: ``redis://`` or ``rediss://``,
    a host, a port from 1 to 65535 if any, and a database number from 0 to
    :data:`MAX_REDIS_DB` as the path if any; or ``unix://`` and a socket's path, no host or
    port; a user and password in either; no query arguments but :data:`REDIS_QUERY`, ``db``
    a database number. Split by :func:`urllib.parse.urlsplit`, as redis-py splits it. Of
    the URL, the message says what is wrong, never the password."""
    scheme, separator, _ = url.partition("://")
    if not separator or scheme not in ("redis", "rediss", "unix"):
        return _REDIS_URL_FORM
    try:
        parts = urlsplit(url)
    except ValueError:  # brackets that hold no IPv6 address, characters that change under NFKC
        return f"{_REDIS_URL_FORM} that urllib.parse can split: an IPv6 host in brackets, no other brackets"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return f"{_REDIS_URL_FORM} with a port from 1 to 65535, or none for 6379"
    if scheme == "unix":
        if parts.hostname or port is not None or not parts.path:
            return "unix:///PATH, the socket's path, with no host or port"
    elif not parts.hostname:
        return f"{_REDIS_URL_FORM} with a host, such as {REDIS_URL!r}"
    elif parts.path not in ("", "/") and not _redis_db(parts.path[1:]):
        return f"{_REDIS_URL_FORM} with a database number from 0 to {MAX_REDIS_DB} as its path, such as /0, or none"
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in REDIS_QUERY or (name == "db" and not _redis_db(value)):
            return (f"{_REDIS_URL_FORM} with no query arguments but {', '.join(REDIS_QUERY)} (db a number from 0 to "
                    f"{MAX_REDIS_DB})")
    return None


def _redis_db(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= len(str(MAX_REDIS_DB)) and int(text) <= MAX_REDIS_DB


_REDIS_URL = {**_spec(lambda v: isinstance(v, str) and _redis_url(v) or _REDIS_URL_FORM,
                      lambda v: _redis_url(v) is None, str),
              "redact": redacted}
_REDIS_PREFIX = _spec(f"1 to {MAX_PREFIX} printable ASCII characters, no spaces",
                      lambda v: 0 < len(v) <= MAX_PREFIX and v.isascii() and v.isprintable() and " " not in v, str)


def _base_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # a port that is not a number raises
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname)
            and not (parts.query or parts.fragment or parts.username or parts.password))


_NOT_SHOWN = "(not shown: it may hold a secret)"
"""What an error shows of a refused value that may be a key (a field's ``secret`` says which):
a ``base_url`` with a user or password, or anything given where the name of the key's
variable goes (a key pasted there, most likely)."""


def _nothing(value: str) -> bool:
    return False


def _redact(spec: Mapping[str, Any], value: Any) -> Any:
    """``value`` of a field whose metadata is ``spec``, with the password the field's
    ``redact`` finds in it redacted (:func:`redacted`)."""
    return spec["redact"](value) if "redact" in spec and isinstance(value, str) else value


def _safe(spec: Mapping[str, Any], value: Any) -> Any:
    """``value`` of a field whose metadata is ``spec`` as an error message may show it: not
    at all when the field's ``secret`` says it may be a key, else :func:`_redact`-ed."""
    return _NOT_SHOWN if isinstance(value, str) and spec.get("secret", _nothing)(value) else _redact(spec, value)


_URL = {**_spec("an http:// or https:// URL with a host, no user or password (the key goes in the variable "
                "api_key_env names) and no query, such as 'http://127.0.0.1:11434/v1' (or '' for a simulated "
                "provider)", lambda v: not v or _base_url(v), str), "added": True, "secret": lambda v: "@" in v}
_ENV = {**_spec("the name of an environment variable (letters, digits and _, not starting with a digit), or ''",
                lambda v: not v or _ENV_NAME.fullmatch(v) is not None, str), "added": True, "secret": lambda v: True}
_MODEL = {**_spec(f"a model name of at most {MAX_MODEL_LENGTH} characters ('': the client's)",
                  lambda v: len(v) <= MAX_MODEL_LENGTH, str), "added": True}


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's routing: its ``balancer``, its ``timeout`` (to a stream's first token,
    or to any other answer), the most seconds between two tokens of a stream
    (``stream_idle_timeout``), and what it does when no provider is eligible, every breaker
    being open (``fallback``): ``"soonest"`` probes the provider whose cooldown ends first,
    ``"panic"`` lets the balancer pick among all of them with their breakers ignored,
    ``"reject"`` answers 503 until one reopens."""

    balancer: str = field(default=BALANCER, metadata=_choice(balancer.names))
    timeout: float = field(default=TIMEOUT, metadata=_POSITIVE_SECONDS)
    stream_idle_timeout: float = field(default=STREAM_IDLE_TIMEOUT, metadata={**_POSITIVE_SECONDS, "added": True})
    fallback: str = field(default=FALLBACK, metadata={**_choice(lambda: FALLBACKS), "added": True})


@dataclass(frozen=True)
class LimiterConfig:
    """The gateway's limits: ``rate`` requests per second with bursts of ``burst``, and
    ``tpm`` > 0 tokens per minute (0: off), for which a request reserves its prompt's
    tokens and its ``max_tokens``, or ``default_max_tokens`` when it gives none. They are
    kept in the gateway (``backend = "local"``) or in the Redis at ``redis_url``, under keys
    starting ``redis_prefix``, each call bounded by ``redis_timeout`` seconds, admitting or
    refusing by ``redis_failure`` when Redis fails (:mod:`gwlab.redis_bucket`)."""

    rate: float = field(default=RATE, metadata=_RATE)
    burst: float = field(default=BURST, metadata=_range(float, 1, MAX_BURST))
    tpm: int = field(default=TPM, metadata={**_range(int, 0, MAX_PER_MINUTE), "added": True})
    default_max_tokens: int = field(default=DEFAULT_MAX_TOKENS,
                                    metadata={**_range(int, 1, MAX_OUTPUT_TOKENS), "added": True})
    backend: str = field(default=LIMITER_BACKEND, metadata={**_choice(lambda: LIMITER_BACKENDS), "added": True})
    redis_url: str = field(default=REDIS_URL, metadata={**_REDIS_URL, "added": True})
    redis_prefix: str = field(default=REDIS_PREFIX, metadata={**_REDIS_PREFIX, "added": True})
    redis_timeout: float = field(default=REDIS_TIMEOUT,
                                 metadata={**_range(float, MIN_SECONDS, MAX_REDIS_TIMEOUT), "added": True})
    redis_failure: str = field(default=REDIS_FAILURE, metadata={**_choice(lambda: REDIS_FAILURES), "added": True})

    def __repr__(self) -> str:
        """As the dataclass's own, with the password in ``redis_url`` redacted."""
        fields = ", ".join(f"{f.name}={_redact(f.metadata, getattr(self, f.name))!r}"
                           for f in dataclasses.fields(self))
        return f"{type(self).__name__}({fields})"


def _statuses(allowed: tuple[int, ...]) -> dict:
    """A list of distinct statuses among ``allowed`` (kept as a tuple)."""
    return _spec(f"a list of distinct statuses among {list(allowed)}",
                 lambda v: all(isinstance(x, int) and not isinstance(x, bool) and x in allowed for x in v)
                 and len(set(v)) == len(v), list)


@dataclass(frozen=True)
class RetryConfig:
    """The gateway's retries (DESIGN, "Retries and fallbacks"), off while ``attempts`` is 1.

    A request whose attempt ends in a status of ``retry_on`` is tried again, on a provider
    not tried yet when one is eligible, up to ``attempts`` attempts in all, after a backoff
    of ``min(max_delay, base_delay × 2^(n−1))`` before the n-th retry spread by ``jitter``
    (:mod:`gwlab.retry`); never after a stream's first byte, and never a retry whose backoff
    would end more than ``deadline`` seconds after the request arrived. A retry budget
    allows at most ``budget_min_per_second × budget_window + budget_ratio × requests``
    retries over the last ``budget_window`` seconds."""

    attempts: int = field(default=RETRY_ATTEMPTS, metadata={**_range(int, 1, MAX_ATTEMPTS), "added": True})
    retry_on: tuple[int, ...] = field(default=RETRY_ON, metadata={**_statuses(RETRY_ON), "added": True})
    base_delay: float = field(default=RETRY_BASE_DELAY, metadata={**_POSITIVE_SECONDS, "added": True})
    max_delay: float = field(default=RETRY_MAX_DELAY, metadata={**_POSITIVE_SECONDS, "added": True})
    jitter: str = field(default=RETRY_JITTER, metadata={**_choice(lambda: JITTERS), "added": True})
    deadline: float = field(default=RETRY_DEADLINE, metadata={**_POSITIVE_SECONDS, "added": True})
    budget_ratio: float = field(default=RETRY_BUDGET_RATIO, metadata={**_range(float, 0, MAX_WEIGHT), "added": True})
    budget_min_per_second: float = field(default=RETRY_BUDGET_MIN_PER_SECOND,
                                         metadata={**_range(float, 0, MAX_RATE), "added": True})
    budget_window: int = field(default=RETRY_BUDGET_WINDOW, metadata={**_range(int, 1, 3600), "added": True})


@dataclass(frozen=True)
class BreakerConfig:
    enabled: bool = field(default=True, metadata=_BOOL)
    failure_threshold: int = field(default=FAILURE_THRESHOLD, metadata=_COUNT)
    base_delay: float = field(default=BASE_DELAY, metadata=_POSITIVE_SECONDS)
    max_cooldown: float = field(default=MAX_COOLDOWN, metadata=_POSITIVE_SECONDS)
    half_open_max_calls: int = field(default=HALF_OPEN_MAX_CALLS, metadata=_COUNT)
    count_rate_limited: bool = field(default=True, metadata={**_BOOL, "added": True})


_ADDED_SECONDS = {**_SECONDS, "added": True}
_ADDED_DISTRIBUTION = {**_choice(lambda: DISTRIBUTIONS), "added": True}
_ADDED_TOKENS = {**_range(float, 0, MAX_OUTPUT_TOKENS), "added": True}


@dataclass(frozen=True)
class ProviderConfig:
    """A simulated provider. ``latency`` is the fixed latency, the exponential's mean or the
    log-normal's median; ``p99`` is the log-normal's 99th percentile (0 = unused).

    Token timing, for LLM traffic (all off by default: a provider then answers after
    ``latency`` with its fixed reply, as the seed's do). ``ttft`` > 0 gives the provider a
    time to first token, a distribution like the latency's (``ttft_distribution``,
    ``ttft_p99``), and a call then lasts ``ttft + (output tokens - 1) / decode_rate``
    (``latency`` is not used). ``output_tokens`` > 0 draws each answer's length from a
    distribution of its own (``output_distribution``, ``output_p99``), rounded to a whole
    number >= 1 and capped by the request's ``max_tokens``. ``stream_error_rate`` is the
    probability that a call fails after its first token, at a point drawn uniformly over its
    output.

    Finite capacity (off by default): ``capacity`` > 0 calls are served at once, and up to
    ``queue`` more wait for a slot, first in, first out (``queue`` is unused while
    ``capacity`` is 0: no call waits); a call that finds the queue full is answered 429 by
    the provider at once. ``rpm`` > 0 is the provider's own limit in requests
    per minute, an exact token bucket of a minute's capacity (``rpm`` tokens) refilled at
    ``rpm`` per minute; a call over it is answered 429 too. ``tpm`` > 0 is its limit in
    tokens per minute, a bucket like the gateway's ``limiter.tpm``: a call reserves the
    request's prompt and ``max_tokens`` (or ``limiter.default_max_tokens``) from it, 429 when
    it is short, and gives back what its answer did not use; a request that reserves more
    than ``tpm`` is never sent to this provider.

    A real upstream (``kind = "openai"``; DESIGN, "Upstreams and replicas"): the gateway
    forwards its calls to the OpenAI-compatible server at ``base_url`` (``POST
    {base_url}/chat/completions``), sending the key held by the environment variable named
    ``api_key_env`` as ``Authorization: Bearer`` ('': no key), and ``model`` as the model
    name ('': the client's), over at most ``connections`` connections, each given
    ``connect_timeout`` seconds to open. The simulated fields (latency, errors, token
    timing) are unused; capacity and limits still apply, at the gateway. ``kind``,
    ``base_url``, ``api_key_env`` and ``connections`` cannot change at runtime."""

    name: str
    weight: float = field(default=1.0, metadata=_range(float, 0, MAX_WEIGHT))
    latency: float = field(default=0.1, metadata=_SECONDS)
    distribution: str = field(default=DISTRIBUTION, metadata=_choice(lambda: DISTRIBUTIONS))
    p99: float = field(default=0.0, metadata=_SECONDS)
    error_rate: float = field(default=0.0, metadata=_range(float, 0, 1))
    outage: str = field(default="none", metadata=_choice(lambda: OUTAGES))
    ttft: float = field(default=0.0, metadata=_ADDED_SECONDS)
    ttft_distribution: str = field(default=DISTRIBUTION, metadata=_ADDED_DISTRIBUTION)
    ttft_p99: float = field(default=0.0, metadata=_ADDED_SECONDS)
    decode_rate: float = field(default=DECODE_RATE, metadata={**_RATE, "added": True})
    output_tokens: float = field(default=0.0, metadata=_ADDED_TOKENS)
    output_distribution: str = field(default=DISTRIBUTION, metadata=_ADDED_DISTRIBUTION)
    output_p99: float = field(default=0.0, metadata=_ADDED_TOKENS)
    stream_error_rate: float = field(default=0.0, metadata={**_range(float, 0, 1), "added": True})
    capacity: int = field(default=0, metadata={**_range(int, 0, MAX_CLIENTS), "added": True})
    queue: int = field(default=0, metadata={**_range(int, 0, MAX_CLIENTS), "added": True})
    rpm: int = field(default=0, metadata={**_range(int, 0, MAX_PER_MINUTE), "added": True})
    tpm: int = field(default=0, metadata={**_range(int, 0, MAX_PER_MINUTE), "added": True})
    kind: str = field(default=KINDS[0], metadata={**_choice(lambda: KINDS), "added": True})
    base_url: str = field(default="", metadata=_URL)
    api_key_env: str = field(default="", metadata=_ENV)
    model: str = field(default="", metadata=_MODEL)
    connections: int = field(default=UPSTREAM_CONNECTIONS, metadata={**_range(int, 1, MAX_CLIENTS), "added": True})
    connect_timeout: float = field(default=UPSTREAM_CONNECT_TIMEOUT, metadata={**_POSITIVE_SECONDS, "added": True})


@dataclass(frozen=True)
class WorkloadConfig:
    """The clients: a closed loop of ``clients`` that wait ``think_time`` between an answer
    and their next request, or an open loop of Poisson arrivals at ``rate`` per second with
    at most ``max_in_flight`` outstanding. A share ``stream_share`` of the requests ask for
    a stream (``stream: true``); ``max_tokens`` > 0 caps each request's output (0: no cap).
    Each request's prompt holds ``prompt_tokens`` tokens (what the tokens limit counts).

    A user request may take several attempts (DESIGN, "Retries and fallbacks";
    :class:`gwlab.workload.ClientRetry`): after a failed attempt a client retries it by
    ``retry_policy``, at most ``retries`` times, waiting ``retry_delay`` (``fixed``,
    ``adaptive``) or a backoff from ``retry_delay`` doubling up to ``retry_max_delay``
    (``exponential_jitter``); ``openai_sdk`` retries as that SDK does with its own delays.
    ``timeout`` > 0 is how long a client waits for an answer before it gives the attempt up
    (the gateway is not told). ``adaptive`` also rejects attempts locally, by the SRE book's
    rule with ``adaptive_k`` over the last ``adaptive_window`` seconds."""

    mode: str = field(default="closed", metadata=_choice(lambda: MODES))
    clients: int = field(default=CLIENTS, metadata=_range(int, 1, MAX_CLIENTS))
    think_time: float = field(default=THINK_TIME, metadata=_SECONDS)
    rate: float = field(default=OPEN_RATE, metadata=_RATE)
    max_in_flight: int = field(default=MAX_IN_FLIGHT, metadata={**_range(int, 1, MAX_CLIENTS), "added": True})
    stream_share: float = field(default=0.0, metadata={**_range(float, 0, 1), "added": True})
    max_tokens: int = field(default=0, metadata={**_range(int, 0, MAX_OUTPUT_TOKENS), "added": True})
    prompt_tokens: int = field(default=PROMPT_TOKENS, metadata={**_range(int, 1, MAX_PROMPT_TOKENS), "added": True})
    retry_policy: str = field(default=CLIENT_RETRY_POLICY, metadata={**_choice(lambda: CLIENT_RETRY_POLICIES), "added": True})
    retries: int = field(default=CLIENT_RETRIES, metadata={**_range(int, 0, MAX_ATTEMPTS - 1), "added": True})
    retry_delay: float = field(default=CLIENT_RETRY_DELAY, metadata={**_POSITIVE_SECONDS, "added": True})
    retry_max_delay: float = field(default=CLIENT_RETRY_MAX_DELAY, metadata={**_POSITIVE_SECONDS, "added": True})
    timeout: float = field(default=CLIENT_TIMEOUT, metadata=_ADDED_SECONDS)
    adaptive_k: float = field(default=ADAPTIVE_K, metadata={**_range(float, 1, MAX_WEIGHT), "added": True})
    adaptive_window: int = field(default=ADAPTIVE_WINDOW, metadata={**_range(int, 1, 3600), "added": True})


@dataclass(frozen=True)
class Event:
    """A scripted change: at ``at`` seconds from the start, ``patch`` is merged in."""

    at: float = field(metadata=_SECONDS)
    patch: Mapping[str, Any]

    def __repr__(self) -> str:
        """As the dataclass's own, with any password in the patch redacted (:func:`shown`)."""
        return f"{type(self).__name__}(at={self.at!r}, patch={shown(self.patch)!r})"


def _seed_providers() -> tuple[ProviderConfig, ...]:
    return tuple(
        ProviderConfig(name=n, weight=w, latency=lat, error_rate=e) for n, w, lat, e in SEED_PROVIDERS
    )


@dataclass(frozen=True)
class Scenario:
    gateway: GatewayConfig = GatewayConfig()
    limiter: LimiterConfig = LimiterConfig()
    breaker: BreakerConfig = BreakerConfig()
    providers: tuple[ProviderConfig, ...] = field(default_factory=_seed_providers)
    workload: WorkloadConfig = WorkloadConfig()
    retry: RetryConfig = RetryConfig()
    events: tuple[Event, ...] = ()

    @property
    def llm(self) -> bool:
        """Whether the scenario has LLM traffic: a provider with token timing, an output
        length model, mid-stream errors, a capacity or its own rate limit, or clients that
        stream or cap their output. The live dashboard shows its LLM controls and charts then."""
        w = self.workload
        return bool(w.stream_share or w.max_tokens) or any(
            p.ttft or p.output_tokens or p.stream_error_rate or p.capacity or p.rpm or p.tpm for p in self.providers)

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self, complete: bool = False) -> dict[str, Any]:
        """The scenario as plain data, in the TOML shape (round-trips through :func:`from_dict`).
        With ``complete``, every field, those :func:`_fields` leaves out at their defaults
        included: a patch that sets each one (:func:`merge` it to go back to this scenario)."""
        out: dict[str, Any] = {
            "gateway": _fields(self.gateway, complete),
            "limiter": _fields(self.limiter, complete),
            "breaker": _fields(self.breaker, complete),
            "providers": {
                p.name: {k: v for k, v in _fields(p, complete).items() if k != "name"}
                for p in self.providers
            },
            "workload": _fields(self.workload, complete),
        }
        retry = _fields(self.retry, complete)
        if retry:  # a section of fields added after the first release: left out at its defaults
            out["retry"] = {k: list(v) if isinstance(v, tuple) else v for k, v in retry.items()}
        if self.events:
            out["events"] = [{"at": e.at, **_plain(e.patch)} for e in self.events]
        return out


def _fields(section: Any, complete: bool = False) -> dict[str, Any]:
    """A section as plain data. A field marked ``added`` (one that came after the first
    release) is left out while it holds its default, unless ``complete``, so that the data,
    and every summary and simulation output holding it, stay byte for byte what they were
    before it existed."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if complete or not (f.metadata.get("added") and getattr(section, f.name) == f.default)}


def shown(data: Mapping[str, Any]) -> dict[str, Any]:
    """Plain scenario data (:meth:`Scenario.to_dict`, a patch) as gwlab shows it in the admin
    API, summaries and log lines: the password in any value of a field that may hold one
    (``limiter.redis_url``) redacted (:func:`redacted`), in each section and in each event;
    the rest as it is."""
    out = dict(data)
    for name, cls in _SECTIONS.items():
        if isinstance(out.get(name), Mapping):
            specs = {f.name: f.metadata for f in dataclasses.fields(cls)}
            out[name] = {key: _redact(specs.get(key, {}), value) for key, value in out[name].items()}
    if isinstance(out.get("events"), list):
        out["events"] = [shown(event) if isinstance(event, Mapping) else event for event in out["events"]]
    return out


def _plain(m: Mapping) -> dict:
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in m.items()}


_SECTIONS = {
    "gateway": GatewayConfig,
    "limiter": LimiterConfig,
    "breaker": BreakerConfig,
    "workload": WorkloadConfig,
    "retry": RetryConfig,
}
_TOP_KEYS = (*_SECTIONS, "providers", "events")


class _Checker:
    """Turns untrusted plain data into config objects, naming the source in every error."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, value: Any, allowed: str) -> ConfigError:
        shown = "(missing)" if value is _MISSING else value if value is _NOT_SHOWN else shown_value(value)
        prefix = f"{self.source}: " if self.source else ""
        return ConfigError(f"{prefix}{where} = {shown}: expected {allowed}")

    def table(self, where: str, value: Any) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, value, "a table")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(f"{where} key", key, "a string, as every key of a table")
        return value

    def unknown(self, where: str, key: str, known: tuple[str, ...]) -> ConfigError:
        hint = difflib.get_close_matches(key, known, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        name = f"{where}.{key}" if where else key
        return ConfigError(
            f"{self.source}: unknown key {shortened(name)}{did}; allowed: {', '.join(known)}"
        )

    def section(self, cls, where: str, data: Any, base):
        data = self.table(where, data)
        specs = {f.name: f for f in dataclasses.fields(cls) if f.metadata}
        values = {}
        for key, raw in data.items():
            if key not in specs:
                raise self.unknown(where, key, tuple(specs))
            values[key] = self.value(f"{where}.{key}", raw, specs[key].metadata)
        return dataclasses.replace(base, **values)

    def value(self, where: str, raw: Any, spec: Mapping) -> Any:
        kind = spec["kind"]
        if kind in (int, float, bool):
            raw = plain_scalar(raw)
        elif kind is list and isinstance(raw, list):  # a list of statuses: whole numbers, as an int field takes them
            raw = [whole_number(item) for item in raw]
        if kind is bool:
            ok = isinstance(raw, bool)
        elif kind is int:
            raw = whole_number(raw)
            ok = isinstance(raw, int) and not isinstance(raw, bool)
        elif kind is float:
            ok = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        else:
            ok = isinstance(raw, kind)
        if not ok or not spec["check"](raw):
            allowed = spec["allowed"]
            raise self.fail(where, _safe(spec, raw), allowed(raw) if callable(allowed) else allowed)
        return float(raw) if kind is float else tuple(raw) if kind is list else raw

    def depth(self, data: Any) -> None:
        """Refuse ``data`` nested deeper than :data:`MAX_DEPTH` tables, and a table or an
        array in a field's place, counted without recursion (a PATCH body can nest thousands
        of levels); the message names the path to the first container too deep. One table
        or array where a field's value belongs is left to that field's check, which names
        what the field takes."""
        # A path is kept as links (its parent's links, its key): written out only for the
        # message, it costs nothing per level however deep the data goes.
        deepest, first, todo = 0, None, [(data, 1, None)]
        while todo:
            value, level, links = todo.pop()
            if isinstance(value, Mapping):
                children = list(value.items())
            elif isinstance(value, list):
                children = list(enumerate(value))
            else:
                continue
            if level > MAX_DEPTH + 1 and first is None:
                first = links
            deepest = max(deepest, level)
            todo.extend((v, level + 1, (links, k)) for k, v in reversed(children))
        if first is not None:
            raise ConfigError(f"{self.source}: {_written(first)}: data nested {deepest} levels deep: expected at "
                              f"most {MAX_DEPTH} levels (the scenario, a section, a provider) and a field's value")


def _written(links: tuple | None) -> str:
    """The dotted path of ``links`` (``(parent links, key)`` pairs; an index is a list's),
    cut after :data:`SHOWN_CHARS` characters."""
    keys = []
    while links is not None:
        links, key = links
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path += f"[{key}]" if isinstance(key, int) else f".{key}" if path else str(key)
        if len(path) > SHOWN_CHARS:
            break
    return cut(path)


_MISSING = object()


def plain_scalar(raw: Any) -> Any:
    """``raw`` as the plain bool, int or float it holds when it is a bool or a number of
    another type (NumPy's ``bool_``, ``int64`` or ``float32``, a 0-d NumPy array holding one,
    a :class:`~fractions.Fraction`; a whole number as an int, exactly), so that it is checked,
    and then kept, as that plain value would be (a bool is no number); anything else as it
    is."""
    if type(raw) in (bool, int, float):
        return raw
    if getattr(raw, "ndim", None) == 0 and hasattr(raw, "item"):  # NumPy's scalars and 0-d arrays
        raw = raw.item()
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, numbers.Integral) or (isinstance(raw, numbers.Rational) and raw.denominator == 1):
        return int(raw)
    if isinstance(raw, numbers.Real):
        return float(raw)
    return raw


def whole_number(raw: Any) -> Any:
    """``raw`` made plain (:func:`plain_scalar`), and a float of a whole value (``2.0``, not
    ``2.5``, NaN or infinity) made the int it equals: a field of whole numbers takes it as
    that int, wherever it is given (a scenario, a sweep's grid, its seeds and workers, a
    flag); anything else as it is, for the caller to refuse."""
    raw = plain_scalar(raw)
    return int(raw) if isinstance(raw, float) and raw.is_integer() else raw


def shortened(text: str) -> str:
    """``text`` quoted as an error message repeats it: its ``repr``, cut after
    :data:`SHOWN_CHARS` characters (``'abc...'``)."""
    return repr(cut(text))


def cut(text: str) -> str:
    """``text`` cut after :data:`SHOWN_CHARS` characters, ending in ``...``, as an error
    message repeats it."""
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def shown_value(value: Any) -> str:
    """``value`` as an error message shows it: as TOML or JSON writes it (``true``, ``null``,
    ``1979-05-27T07:32:00``), in one short line whatever the value: a table or an array that
    is not of numbers named, a whole number of more than :data:`SHOWN_DIGITS` digits
    rounded, a string or an array of numbers cut after about :data:`SHOWN_CHARS` characters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if hasattr(value, "isoformat"):  # a TOML date or time (this module imports no clock)
        return value.isoformat()
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, str):
        return shortened(value)
    if isinstance(value, list):
        return _numbers(value) if all(type(v) in (int, float) for v in value) else "an array"
    if isinstance(value, int) and abs(value) >= 10**SHOWN_DIGITS:
        return str(Decimal(value).normalize(Context(prec=6)))  # 1E+400, not every digit
    return repr(value)


def _numbers(values: list[float]) -> str:
    """An array of numbers as an error message shows it: its first numbers, as many as fit
    in about :data:`SHOWN_CHARS` characters, then how many it holds in all."""
    shown: list[str] = []
    length = 0
    for value in values:
        if length > SHOWN_CHARS:
            return f"[{', '.join(shown)}, ... ({len(values)} numbers)]"
        shown.append(shown_value(value))
        length += len(shown[-1]) + 2
    return f"[{', '.join(shown)}]"


def run_argument(name: str, value: Any, where: str) -> Any:
    """``value`` checked against ``RUN_ARGUMENTS[name]`` (a number made a float or int); raises
    a one-line :class:`ConfigError` "``where`` = value: expected ..." otherwise."""
    return _Checker("").value(where, value, RUN_ARGUMENTS[name])


def distinct_ports(port: int, metrics_port: int, replicas: int = 1,
                   names: tuple[str, str] = ("--port", "--metrics-port")) -> None:
    """Raise a :class:`ConfigError` naming both (as ``names`` call them) when the gateway's
    ``port`` is one of the metrics ports of ``replicas`` gateways (``metrics_port + i`` for
    each replica ``i``): the two servers need ports of their own. Port 0 asks for a free
    port, which never clashes."""
    if port and metrics_port and metrics_port <= port < metrics_port + replicas:
        if replicas == 1:
            clash = f"{names[0]} = {port} and {names[1]} = {metrics_port}"
        else:
            clash = (f"{names[0]} = {port} is the metrics port of replica {port - metrics_port} "
                     f"({names[1]} = {metrics_port}, plus {port - metrics_port})")
        raise ConfigError(f"{clash}: the gateway and its metrics need a port each")


def from_dict(data: Mapping[str, Any], source: str = "scenario") -> Scenario:
    """Build a scenario from plain data; absent sections and fields take their defaults.

    A ``providers`` table lists the scenario's providers completely, in order (the order
    breaks ties in the fallback); without one, the seed's three providers are used.
    Raises :class:`ConfigError` naming ``source``, the field, the value and what is allowed.
    """
    return _build(_Checker(source), data, Scenario(), patch=False)


def check(scenario: Scenario, source: str = "scenario") -> None:
    """Raise :class:`ConfigError` if ``scenario`` holds a value that :func:`from_dict` refuses:
    a scenario built from the dataclasses in code has not been through it."""
    checker = _Checker(source)
    for event in scenario.events:
        checker.depth(event.patch)  # before to_dict() walks the patches
    from_dict(scenario.to_dict(), source)


def merge(scenario: Scenario, patch: Mapping[str, Any], source: str = "patch", at_start: bool = False) -> Scenario:
    """``scenario`` with ``patch`` deep-merged in and validated as a whole.

    This is a runtime change or a scripted event: it may change any field of the existing
    providers but those fixed while a gateway runs (:data:`RESTART_ONLY`,
    :data:`FIXED_FIELDS`), and not add, remove or rename providers. With ``at_start`` it
    makes the scenario a gateway starts with (a command-line flag): fixed fields may change.
    """
    return _build(_Checker(source), patch, scenario, patch=True, fixed=not at_start)


def _build(check: _Checker, data: Any, base: Scenario, patch: bool, fixed: bool = True) -> Scenario:
    data = check.table("scenario", data)
    # Each event is a patch of its own, checked when it is applied below.
    check.depth({k: v for k, v in data.items() if k != "events"})
    allowed = tuple(k for k in _TOP_KEYS if not (patch and k == "events"))
    for key in data:
        if key not in allowed:
            raise check.unknown("", key, allowed)
    parts: dict[str, Any] = {
        name: check.section(cls, name, data[name], getattr(base, name))
        for name, cls in _SECTIONS.items()
        if name in data
    }
    if "providers" in data:
        parts["providers"] = _providers(check, data["providers"], base if patch else None, fixed)
    if "events" in data:
        parts["events"] = _events(check, data["events"])
    if patch and fixed:
        for dotted in RESTART_ONLY:
            section, key = dotted.split(".")
            spec = next(f.metadata for f in dataclasses.fields(_SECTIONS[section]) if f.name == key)
            current, was = parts.get(section, getattr(base, section)), getattr(getattr(base, section), key)
            value = getattr(current, key)
            if value == _redact(spec, was) != was:
                # The value as gwlab shows it (GET /admin/config), password redacted: no change.
                parts[section] = dataclasses.replace(current, **{key: was})
            elif value != was:
                raise check.fail(dotted, _safe(spec, value), _restart(_safe(spec, was)))
    scenario = dataclasses.replace(base, **parts)
    _check_whole(check, scenario)
    if "events" in data:
        # Events apply one after another, so each patch is checked against the scenario as
        # the earlier events left it.
        current = dataclasses.replace(scenario, events=())
        for event in scenario.events:
            current = _build(_Checker(f"{check.source}: event at {event.at:g} s"), event.patch, current, patch=True)
    return scenario


def _providers(check: _Checker, data: Any, base: Scenario | None, fixed: bool) -> tuple[ProviderConfig, ...]:
    data = check.table("providers", data)
    if len(data) > MAX_PROVIDERS:
        raise check.fail("providers", data, f"at most {MAX_PROVIDERS} providers, not {len(data)}")
    if base is None:
        result: dict[str, ProviderConfig] = {}
        for name in data:
            if not (name.isascii() and name.isidentifier()):  # it goes into HTTP headers, which are ASCII
                raise check.fail(f"providers.{shortened(name)}", name,
                                 "a provider name of ASCII letters, digits and _, not starting with a digit")
            result[name] = ProviderConfig(name=name)
    else:
        result = {p.name: p for p in base.providers}
    for name, fields in data.items():
        if name not in result:
            raise check.unknown("providers", name, tuple(result))
        was = result[name]
        result[name] = check.section(ProviderConfig, f"providers.{name}", fields, was)
        if base is not None and fixed:
            for key in FIXED_FIELDS:
                if getattr(result[name], key) != getattr(was, key):
                    raise check.fail(f"providers.{name}.{key}", getattr(result[name], key), _restart(getattr(was, key)))
    if not result:
        raise check.fail("providers", {}, "at least one provider")
    return tuple(result.values())


_AT = next(f.metadata for f in dataclasses.fields(Event) if f.name == "at")


def _events(check: _Checker, data: Any) -> tuple[Event, ...]:
    if not isinstance(data, list):
        raise check.fail("events", data, "an array of tables ([[events]])")
    events = []
    for i, item in enumerate(data):
        item = dict(check.table(f"events[{i}]", item))
        at = check.value(f"events[{i}].at", item.pop("at", _MISSING), _AT)
        if not item:
            raise check.fail(f"events[{i}]", {"at": at}, "at least one change besides 'at'")
        if "events" in item:
            raise check.unknown(f"events[{i}]", "events", tuple(k for k in _TOP_KEYS if k != "events"))
        _Checker(f"{check.source}: event at {at:g} s").depth(item)  # before _plain_scalars walks it
        events.append(Event(at=at, patch=_plain_scalars(item)))
    return tuple(sorted(events, key=lambda e: e.at))


def _plain_scalars(data: Any) -> Any:
    """``data`` (tables, arrays and values) with every bool and number made plain
    (:func:`plain_scalar`): an event's patch is kept as given, and a summary writes it out as
    JSON."""
    if isinstance(data, Mapping):
        return {key: _plain_scalars(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_plain_scalars(value) for value in data]
    return plain_scalar(data)


def _restart(was: Any) -> str:
    """What a patch may set a field of :data:`RESTART_ONLY` or :data:`FIXED_FIELDS` to."""
    return f"{was!r}, its value at start: it is fixed while the gateway runs (restart it with the new value)"


def _check_whole(check: _Checker, s: Scenario) -> None:
    """Rules that involve more than one field."""
    if sum(p.weight for p in s.providers) <= 0:
        raise check.fail("providers.*.weight", [p.weight for p in s.providers], "at least one weight > 0")
    for p in s.providers:
        _check_kind(check, p)
        for median, distribution, p99, what in (("latency", "distribution", "p99", "latency"),
                                                ("ttft", "ttft_distribution", "ttft_p99", "time to first token"),
                                                ("output_tokens", "output_distribution", "output_p99",
                                                 "output length")):
            m, q = getattr(p, median), getattr(p, p99)
            if getattr(p, distribution) == "lognormal" and not 0 < m < q <= MAX_P99_RATIO * m:
                raise check.fail(
                    f"providers.{p.name}.{p99}", q,
                    f"a log-normal p99 greater than its median {what} ({m:g}), which must be > 0, "
                    f"and at most {MAX_P99_RATIO:g} times it",
                )
    if s.retry.max_delay < s.retry.base_delay:
        raise check.fail("retry.max_delay", s.retry.max_delay, f"a number >= retry.base_delay ({s.retry.base_delay:g})")
    w = s.workload
    if w.retry_max_delay < w.retry_delay:
        raise check.fail("workload.retry_max_delay", w.retry_max_delay,
                         f"a number >= workload.retry_delay ({w.retry_delay:g})")
    if s.breaker.max_cooldown < s.breaker.base_delay:
        raise check.fail(
            "breaker.max_cooldown", s.breaker.max_cooldown,
            f"a number >= breaker.base_delay ({s.breaker.base_delay:g})",
        )


def _check_kind(check: _Checker, p: ProviderConfig) -> None:
    """A real upstream needs its URL; a simulated provider has no URL, key or model."""
    if p.kind == "openai":
        if not p.base_url:
            raise check.fail(f"providers.{p.name}.base_url", p.base_url,
                             "the upstream's URL for kind = 'openai', such as 'http://127.0.0.1:11434/v1'")
        return
    for key in UPSTREAM_NAMES:
        if getattr(p, key):
            raise check.fail(f"providers.{p.name}.{key}", getattr(p, key),
                             "'' for a simulated provider: set kind = 'openai' to forward to a real upstream")


def load(path: str | Path) -> Scenario:
    """Read a scenario TOML file of at most :data:`MAX_SCENARIO_BYTES`; any problem raises a
    one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse(raw, str(path))


def parse(raw: bytes, source: str) -> Scenario:
    """The scenario in ``raw``, a scenario TOML file's bytes as read (at most
    :data:`MAX_SCENARIO_BYTES` and one more, to tell a longer one); any problem raises a
    one-line :class:`ConfigError` naming ``source``."""
    if len(raw) > MAX_SCENARIO_BYTES:
        raise ConfigError(f"{source}: more than {MAX_SCENARIO_BYTES} bytes: expected a scenario file of at most "
                          f"{MAX_SCENARIO_BYTES} bytes (gwlab.config.MAX_SCENARIO_BYTES)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: byte {exc.object[exc.start]:#04x} at offset {exc.start}: expected UTF-8 text "
                          "(TOML files are UTF-8)") from None
    if text.startswith("\ufeff"):  # some editors start UTF-8 with it; tomllib reads it as an invalid statement
        raise ConfigError(f"{source}: starts with a byte order mark (bytes 0xef 0xbb 0xbf): expected UTF-8 text "
                          "without one (save it without the mark)")
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from None
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return from_dict(data, source)
