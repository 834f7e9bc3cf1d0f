"""Counting outcomes and latencies.

:class:`LatencyHistogram` is a mergeable logarithmic histogram (the DDSketch mapping: Masson,
Rim and Lee, VLDB 2019): a latency ``v > 0`` falls in bucket ``ceil(log(v) / log(gamma))`` with
``gamma = (1 + a) / (1 - a)``, and the bucket is represented by ``2 * gamma**i / (gamma + 1)``,
which is within a relative error ``a`` of every value in it. Quantiles read from it are
therefore within ``a`` (1% by default) of the exact ones, in constant memory however many
requests are observed, and two histograms merge by adding counts.

:class:`Tally` counts requests by status and provider and keeps the latency histogram of
admitted ones; :func:`gwlab.summary.summarise` turns one into a run's summary.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import reduce
from itertools import repeat
from operator import add, truediv
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

RELATIVE_ERROR = 0.01
"""Relative accuracy of every latency quantile gwlab reports from a histogram."""
QUANTILES = (0.5, 0.95, 0.99)
STREAM_ERROR = 1
"""Status of a stream that failed after its first byte: not an HTTP code (the answer had
begun with 200), counted apart from 200 everywhere."""
ADMITTED = (200, 502, 504, STREAM_ERROR)
"""Statuses of requests that passed the rate limiter and reached a provider; a 429 under a
provider's name (the provider's own limit or queue refused the call) is admitted too, see
:func:`admitted`."""
RATE_LIMITED = 429
UNAVAILABLE = 503
"""Every provider cooling down, under ``gateway.fallback = "reject"``."""
CUT_OFF = 499
"""A request still unanswered when the run stopped (the nginx convention)."""
NO_PROVIDER = "none"


class StatusRow(NamedTuple):
    """One way an answer counts (DESIGN, "Statuses"): what happened, its ``code`` label in
    the metrics and summaries, whether it passed the gateway's limiter, what its provider's
    breaker records, and whether it is goodput."""

    answer: str
    code: str
    admitted: str
    breaker: str
    goodput: str


STATUS_TABLE = (
    StatusRow("200: the provider answered", "`200`", "yes", "success", "yes"),
    StatusRow("4xx: a bad request", "its code, provider `none`", "no", "-", "no"),
    StatusRow("429: the gateway's limit", "`429`, provider `none`", "no", "-", "no"),
    StatusRow("429: the provider's queue or own limit", "`429`, provider named", "yes",
              "failure (none with `breaker.count_rate_limited = false`)", "no"),
    StatusRow("502: the provider failed", "`502`", "yes", "failure", "no"),
    StatusRow("503: every breaker open, `gateway.fallback = reject`", "`503`, provider `none`",
              "no: the gateway answers it itself (the limiter took its request token)", "-", "no"),
    StatusRow("504: past `gateway.timeout`", "`504`", "yes", "failure", "no"),
    StatusRow("a stream failed after its first byte", "`stream_error`", "yes", "failure", "no"),
    StatusRow("499: the client left (seen when its answer is written, or mid-stream at once), or a stop cut it off "
              "(a stream then ends with the error frame `gateway_stopped`, which the SDK raises), or the end of "
              "`gwlab run` did (its connection closed; its client counts the same 499)",
              "`499`", "yes", "its call's outcome when the call ran its course; none when cut off: a probe slot is freed",
              "no"),
    StatusRow("no HTTP answer (client side only)", "`transport_error`", "-", "-", "no"),
    StatusRow("the client stopped waiting, `workload.timeout` (client side only)", "`client_timeout`", "-",
              "none: the gateway serves it on, then counts a 499 (its answer's own status when that went out "
              "as the client's timer ran out)", "no"),
)
"""How every answer counts; the README prints it (:func:`status_table`). A summary's
``admitted`` counts the answers of admitted requests (:func:`admitted`): a 499 passed the
limiter but got no answer, so it is not among them."""


def status_table() -> str:
    """:data:`STATUS_TABLE` as the README's Markdown table."""
    lines = ["| answer | `code` | reached a provider | breaker | goodput |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in STATUS_TABLE]
    return "\n".join(lines)


def admitted(status: int, provider: str) -> bool:
    """Whether an answer of ``status`` under ``provider`` passed the gateway's limiter and
    reached a provider: DESIGN's status table (a 429 is the gateway's under ``"none"``, a
    provider's under its name)."""
    return status in ADMITTED or (status == RATE_LIMITED and provider != NO_PROVIDER)
TRANSPORT_ERROR = 0
"""Status a client records for a request that got no HTTP answer (connection refused or
reset): client-side only, the gateway never saw it answered."""
CLIENT_TIMEOUT = 2
"""Status a client records for an attempt it gave up waiting for (``workload.timeout``):
client-side only. The gateway goes on serving it until it writes to it (DESIGN, "Retries
and fallbacks"): the live one then counts a 499, the simulated one ``wasted`` work."""
CODE_NAMES = {TRANSPORT_ERROR: "transport_error", STREAM_ERROR: "stream_error", CLIENT_TIMEOUT: "client_timeout"}
"""Statuses that are not HTTP codes, by the name every summary gives them."""


def code_name(status: int) -> str:
    """How summaries and status lines name ``status``: its HTTP code, or its name in
    :data:`CODE_NAMES`."""
    return CODE_NAMES.get(status, str(status))


class Counts(Counter):
    """A :class:`~collections.Counter` whose ``del counts[key]`` is dict's, raising
    :class:`KeyError` for a key it does not hold. Counter defines ``__delitem__`` in Python,
    and since a type has one slot for storing and deleting items, that makes every
    ``counts[key] += 1`` a Python-level call; the simulator counts each request this way."""

    __delitem__ = dict.__delitem__


_ceil, _log2 = math.ceil, math.log2
"""Bound once: :meth:`LatencyHistogram.add` runs for every request."""


class LatencyHistogram:
    """Latencies in seconds, bucketed with relative error ``alpha`` (the module's DDSketch
    mapping). The bucket's logarithm is taken as ``log2(v) / log2(gamma)``: ``math.log``
    accepts a base, which makes each of its calls take its arguments as a tuple, at twice
    the cost of ``log2``'s."""

    __slots__ = ("alpha", "_log2_gamma", "_gamma", "counts", "zeros", "count", "total", "max")

    def __init__(self, alpha: float = RELATIVE_ERROR) -> None:
        self.alpha = alpha
        self._gamma = (1 + alpha) / (1 - alpha)
        self._log2_gamma = math.log2(self._gamma)
        self.counts: dict[int, int] = {}
        """Values counted by bucket index. A plain dict, not a Counter: Counter defines
        ``__delitem__`` in Python, which makes every ``counts[i] = ...`` a Python-level call,
        and :meth:`add` runs for every request."""
        self.zeros = 0
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        if seconds > 0:
            index = _ceil(_log2(seconds) / self._log2_gamma)
            self.counts[index] = self.counts.get(index, 0) + 1
        else:
            self.zeros += 1

    def add_all(self, values: Sequence[float]) -> None:
        """Count ``values`` (seconds, none of them NaN), with the same result as :meth:`add`
        for each in turn (the total summed in their order), in one pass whose work per value
        is done by builtins: a shell that counts many values at once (the simulator, per
        time bin) saves a Python call per value."""
        if not values:
            return
        self.count += len(values)
        self.total = reduce(add, values, self.total)  # left to right, as one += after another
        top = max(values)
        if top > self.max:
            self.max = top
        positive = values if min(values) > 0 else [v for v in values if v > 0]
        self.zeros += len(values) - len(positive)
        indices = Counter(map(_ceil, map(truediv, map(_log2, positive), repeat(self._log2_gamma))))
        counts = self.counts
        if not counts:  # the first values: no count to add to (the order of the keys is never read)
            self.counts = dict(indices)
            return
        for index, n in indices.items():
            counts[index] = counts.get(index, 0) + n

    def merge(self, other: LatencyHistogram) -> None:
        if other.alpha != self.alpha:
            raise ValueError("cannot merge histograms of different accuracy")
        counts = self.counts
        for index, n in other.counts.items():
            counts[index] = counts.get(index, 0) + n
        self.zeros += other.zeros
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def since(self, earlier: LatencyHistogram) -> LatencyHistogram:
        """What was added to this histogram after ``earlier``, a copy of it taken then: the
        counts exactly, the total by difference, and the largest value exactly when it is
        larger than ``earlier``'s, else within ``alpha`` (from the highest bucket added)."""
        h = LatencyHistogram(self.alpha)
        h.counts = {i: n - earlier.counts.get(i, 0) for i, n in self.counts.items() if n != earlier.counts.get(i, 0)}
        h.zeros, h.count, h.total = self.zeros - earlier.zeros, self.count - earlier.count, self.total - earlier.total
        h.max = self.max
        if h.count and self.max == earlier.max:
            h.max = h.quantile(1.0)
        return h

    def quantile(self, q: float) -> float | None:
        """The value of rank ``floor(q * (count - 1))`` (0-based, in sorted order), within the
        relative error; ``None`` when empty."""
        if not self.count:
            return None
        rank = math.floor(q * (self.count - 1))
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen > rank:
                return min(2 * self._gamma**index / (self._gamma + 1), self.max)
        return self.max

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "zeros": self.zeros, "count": self.count, "total": self.total,
                "max": self.max, "counts": {str(k): v for k, v in sorted(self.counts.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        h = cls(data["alpha"])
        h.counts = {int(k): v for k, v in data["counts"].items()}
        h.zeros, h.count, h.total, h.max = data["zeros"], data["count"], data["total"], data["max"]
        return h


def time_per_output_token(latency: float, ttft: float, tokens: int) -> float:
    """The seconds between a stream's tokens after its first: ``(latency - ttft) /
    (tokens - 1)`` for a stream of ``tokens`` >= 2 tokens whose last byte came ``latency``
    seconds after it was sent and its first token ``ttft`` seconds after (DESIGN, "LLM
    traffic"; vLLM's ``time_per_output_token_seconds``)."""
    return (latency - ttft) / (tokens - 1)


USER_OUTCOMES = ("ok", "failed", "timed_out", "throttled", "cut_off")
"""How a user request ends: a success; a failure its client does not retry (or no retry
left); its last attempt given up at the client's timeout; rejected by the client's own
adaptive throttling; still going when the run stopped."""


class Tally:
    """Requests counted by (status, provider), with the latency histogram of admitted ones;
    for streams, the histograms of their time to first token and time per output token; and
    the output tokens the answers carried (in a simulation, from providers with token timing
    or a length model: a fixed reply is not counted; the live clients count what the answers'
    usage says, see :func:`gwlab.summary.summarise`).

    Time per output token follows DESIGN: ``(latency - ttft) / (tokens - 1)`` for a stream of
    at least two tokens."""

    __slots__ = ("by_status", "latency", "ttft", "tpot", "output_tokens", "users")

    def __init__(self) -> None:
        self.by_status: Counts[tuple[int, str]] = Counts()
        self.latency = LatencyHistogram()
        self.ttft = LatencyHistogram()
        self.tpot = LatencyHistogram()
        self.output_tokens = 0
        self.users: Counts[str] = Counts()
        """User requests of clients that time out or retry (:mod:`gwlab.workload`), counted
        as they end, by outcome (:data:`USER_OUTCOMES`); ``"attempts"``, the attempts those
        sent to the gateway; and ``"wasted"`` (simulated runs only), the gateway's answers to
        attempts whose clients had stopped waiting. Empty for clients that do neither."""

    def record(self, status: int, provider: str, latency: float | None) -> None:
        self.by_status[status, provider] += 1
        if latency is not None and admitted(status, provider):
            self.latency.add(latency)

    def record_stream(self, latency: float, ttft: float, tokens: int) -> None:
        """A stream's timing, once it has ended after its first token: ``latency`` to its
        last byte and ``ttft`` in seconds, ``tokens`` the output tokens it carried."""
        self.ttft.add(ttft)
        if tokens >= 2:
            self.tpot.add(time_per_output_token(latency, ttft, tokens))

    def merge(self, other: Tally) -> None:
        self.by_status.update(other.by_status)
        self.latency.merge(other.latency)
        self.ttft.merge(other.ttft)
        self.tpot.merge(other.tpot)
        self.output_tokens += other.output_tokens
        self.users.update(other.users)

    def since(self, earlier: Tally) -> Tally:
        """What was counted in this tally after ``earlier``, a copy of it taken then
        (:meth:`copy`); latencies as :meth:`LatencyHistogram.since` gives them."""
        t = Tally()
        for mine, theirs, into in ((self.by_status, earlier.by_status, t.by_status), (self.users, earlier.users, t.users)):
            into.update({key: n - theirs[key] for key, n in mine.items() if n != theirs[key]})
        t.latency, t.ttft, t.tpot = (self.latency.since(earlier.latency), self.ttft.since(earlier.ttft),
                                     self.tpot.since(earlier.tpot))
        t.output_tokens = self.output_tokens - earlier.output_tokens
        return t

    def copy(self) -> Tally:
        return Tally.from_dict(self.to_dict())

    def count(self, statuses: Iterable[int] | None = None, provider: str | None = None) -> int:
        wanted = None if statuses is None else set(statuses)
        return sum(n for (s, p), n in self.by_status.items()
                   if (wanted is None or s in wanted) and (provider is None or p == provider))

    def admitted(self, provider: str | None = None) -> int:
        """Requests that reached a provider (:func:`admitted`), or ``provider``."""
        return sum(n for (s, p), n in self.by_status.items()
                   if admitted(s, p) and (provider is None or p == provider))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the stream histograms and token count only when they hold something,
        so that the tally of a run without streams is what it was before they existed."""
        out: dict[str, Any] = {"by_status": [[s, p, n] for (s, p), n in sorted(self.by_status.items())],
                               "latency": self.latency.to_dict()}
        if self.ttft.count:
            out["ttft"] = self.ttft.to_dict()
        if self.tpot.count:
            out["tpot"] = self.tpot.to_dict()
        if self.output_tokens:
            out["output_tokens"] = self.output_tokens
        if self.users:
            out["users"] = dict(sorted(self.users.items()))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        t = cls()
        t.by_status.update({(s, p): n for s, p, n in data["by_status"]})
        t.latency = LatencyHistogram.from_dict(data["latency"])
        if "ttft" in data:
            t.ttft = LatencyHistogram.from_dict(data["ttft"])
        if "tpot" in data:
            t.tpot = LatencyHistogram.from_dict(data["tpot"])
        t.output_tokens = data.get("output_tokens", 0)
        t.users.update(data.get("users", {}))
        return t
