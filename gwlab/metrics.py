"""Prometheus metrics of one gateway, in a registry of its own.

Each :class:`Metrics` owns a ``CollectorRegistry``, so two gateways in one process (two
notebooks, a test and its reference) never collide. Names and units:

==================================================  =========  ================================
gwlab_requests_total{code,provider}                 counter    answers sent (see below)
gwlab_request_duration_seconds{provider}            histogram  admitted requests, and 429s
                                                               under ``provider="none"``
gwlab_rate_limited_total                            counter    429 answers
gwlab_limiter_rejected_total{limit}                 counter    429 answers by the limit that
                                                               refused: ``requests``,
                                                               ``tokens``, or ``unavailable``
                                                               (Redis failing closed)
gwlab_limiter_backend_errors_total                  counter    admissions, refunds and changes
                                                               that the limiter's Redis failed
                                                               (``limiter.backend = "redis"``)
gwlab_fallback_total{provider}                      counter    calls forced on the provider
                                                               whose cooldown ends soonest
gwlab_retry_decisions_total{decision}               counter    failed attempts the gateway
                                                               retried (``retry``) or not, for
                                                               want of ``attempts``, time
                                                               (``deadline``) or ``budget``
gwlab_panic_total{provider}                         counter    calls made with every breaker
                                                               open (``gateway.fallback =
                                                               "panic"``)
gwlab_in_flight_requests                            gauge      admitted requests not answered
gwlab_provider_requests_total{provider,outcome}     counter    provider calls that ended:
                                                               success, error, timeout,
                                                               stream_error or rate_limited
                                                               (every attempt of a request)
gwlab_provider_request_duration_seconds{provider}   histogram  those calls' durations
gwlab_breaker_state{provider,state}                 gauge      1 for the current state
gwlab_breaker_cooldown_seconds{provider}            gauge      cooldown left (0 unless open)
gwlab_breaker_transitions_total{provider,from_state,to_state}  counter
gwlab_limiter_tokens                                gauge      tokens in the bucket
gwlab_limiter_tpm_tokens                            gauge      tokens in the tokens-per-minute
                                                               bucket (below 0 in debt), while
                                                               ``limiter.tpm`` is on
gwlab_provider_weight{provider}                     gauge      balancer weight
gwlab_time_to_first_token_seconds{provider}         histogram  streams: arrival to first token
gwlab_time_per_output_token_seconds{provider}       histogram  streams of >= 2 tokens: the
                                                               time after the first token
                                                               over the tokens after it
gwlab_provider_requests_running{provider}           gauge      calls in a slot of a provider
                                                               with a capacity
gwlab_provider_requests_waiting{provider}           gauge      calls waiting for a slot
gwlab_tokens_total{provider,kind}                   counter    ``prompt`` tokens of the
                                                               requests a provider answered
                                                               and ``completion`` tokens
                                                               of its answers
==================================================  =========  ================================

The names of the LLM series follow vLLM's (``vllm:time_to_first_token_seconds``,
``vllm:time_per_output_token_seconds``, ``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:prompt_tokens_total``,
``vllm:generation_tokens_total``). A stream that fails after its first byte is counted under
``code="stream_error"`` (its HTTP status was 200) and as the provider outcome
``stream_error``.

The tokens-per-minute limit adds series of its own rather than a label on the requests
limit's: ``gwlab_limiter_tokens`` and ``gwlab_rate_limited_total`` keep their meaning (the
requests bucket's tokens; every 429 of the gateway), so queries written for them still
answer the same question, and a gauge of requests and one of LLM tokens never meet in one
series.

``gwlab_requests_total`` counts every answer to a chat completion request, bad requests
included (400, 413, 415 ... with ``provider="none"``, since a bad request never reaches the
router), and every other 4xx or 5xx the gateway sends (unknown path, wrong method, admin
errors). Successful answers of ``/healthz``, ``/v1/models`` and ``/admin/*`` are not chat
traffic and are not counted. A request the gateway cuts off while stopping is counted as
``code="499"`` under the provider it was waiting for, and not as a provider outcome. Bad
requests are not observed in the duration histogram: latency is about admitted requests.

The registry also holds prometheus_client's process and platform collectors (``process_*``:
CPU seconds, resident memory, open file descriptors, start time; ``python_info``), which its
default registry would have shown. The metrics server hands the registry to
prometheus_client's own aiohttp handler, which answers in the text format or in OpenMetrics
as the scraper's ``Accept`` asks, gzipped when its ``Accept-Encoding`` allows, with only the
series named by ``name[]`` parameters when the scrape gives any (every collector says what
it gives: gwlab's from :data:`FAMILIES`, the process's by a first collect).

Everything that depends on time (tokens, breaker state and cooldown) is read from the router
at scrape time, in one :meth:`Router.snapshot` at the gateway clock's ``now``, which first
announces the cooldowns that ended; so an idle gateway still shows HALF_OPEN once a cooldown has passed,
and the transitions counter agrees with the state shown. Weights and the in-flight count are
read from the router too, so they can never go stale. Collect on the gateway's event loop
thread (the metrics server does), since the router is not thread-safe.

The request path counts in plain numbers (dictionary entries and :class:`Buckets`), which
the collector hands to prometheus_client's own metric families at scrape time. The library's
``Counter`` and ``Histogram`` take a lock and run a Python loop on every increment, four
times per answer; plain numbers cost a fraction of that (``benchmarks/README.md``). All
counting happens on the gateway's event loop thread, as the scraping does, so no lock is
needed.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
from bisect import bisect_left
from typing import Callable, Iterator

from gwlab.needs import needs

needs("gwlab.metrics", ("prometheus_client",))

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from gwlab import config
from gwlab.breaker import State, Transition
from gwlab.errors import NO_PROVIDER
from gwlab.providers import Outcome
from gwlab.router import LIMITER_UNAVAILABLE, RATE_LIMIT_REQUESTS, RATE_LIMIT_TOKENS, RETRY_DECISIONS, Route, Router
from gwlab.stats import code_name

BUCKET_RATIO = 1.038
"""Ratio of consecutive histogram bounds. PromQL's ``histogram_quantile`` interpolates
linearly inside the bucket ``(a, b]`` that holds the quantile's rank, and the true quantile
lies in that bucket too, so the estimate is within a factor ``b / a`` of it, whatever the
distribution (a single latency included). With bounds rounded to four significant digits
``b / a`` stays below 1.039, and the summaries' quantiles are within
:data:`gwlab.stats.RELATIVE_ERROR` (1 %) of the true ones: 1.039 x 1.01 < 1.05, so a
quantile PromQL reads from these histograms is within 5 % of the summary's."""


def log_bounds(low: float, high: float, ratio: float = BUCKET_RATIO) -> tuple[float, ...]:
    """Histogram bounds in seconds: ``low * ratio**k`` for k = 0, 1, ... up to the first at or
    above ``high``, each rounded to four significant digits (short ``le`` labels)."""
    bounds = [low]
    while bounds[-1] < high:
        bounds.append(float(f"{low * ratio ** len(bounds):.4g}"))
    return tuple(bounds)


BUCKETS = log_bounds(0.005, 120.0)
"""Bounds of the latency and time-to-first-token histograms, in seconds: quantiles between 5 ms
and 2 minutes read within :data:`BUCKET_RATIO`; at or below 5 ms an estimate is off by 5 ms at
most, and above 2 minutes it reads as the last bound."""
TPOT_BUCKETS = log_bounds(0.001, 1.0)
"""Bounds of the time-per-output-token histogram, in seconds: from 1 ms (1000 tokens a
second) to 1 s (one a second) within :data:`BUCKET_RATIO`."""
TOKEN_KINDS = ("prompt", "completion")
LIMITS = {RATE_LIMIT_REQUESTS: "requests", RATE_LIMIT_TOKENS: "tokens", LIMITER_UNAVAILABLE: "unavailable"}
"""The ``limit`` label of ``gwlab_limiter_rejected_total`` by the 429's code."""
STATES = tuple(s.value for s in State)
CUT_OFF = 499
"""Status counted for a request cut off by the gateway's shutdown (the nginx convention)."""
_PRECREATED_CODES = (200, 502, 504)
_PRECREATED_REFUSALS = (400, 429)
_DIAGRAM = (
    (State.HEALTHY, State.FAILING), (State.FAILING, State.HEALTHY), (State.FAILING, State.OPEN),
    (State.HEALTHY, State.OPEN),
    (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.HEALTHY), (State.HALF_OPEN, State.OPEN),
)
"""The seed's state diagram, with the edge a breaker of ``failure_threshold = 1`` takes from
healthy straight to open; its edges exist as series from the start, so that PromQL's
``increase`` counts even the first transition along each (a series first seen at 1 has not
increased)."""


class Buckets:
    """One histogram series: how many observations fell at or below each of ``bounds``
    (Prometheus's ``le``; :data:`BUCKETS` by default), and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        """Observations per bucket, not cumulative; the last one is above every bound."""
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bound >= value: the bucket whose ``le`` the value is counted under.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as the exposition wants them: each bound with every
        observation at or below it, ending with ``+Inf``."""
        return list(zip(_les(self.bounds), itertools.accumulate(self.counts)))


class _Served:
    """The series of one provider that every answer it gives counts in, held together so
    that an answer finds them with one lookup: its request durations (arrival to answer),
    its call durations, and the prompt and completion tokens of its answers."""

    __slots__ = ("durations", "call_durations", "prompt_tokens", "completion_tokens")

    def __init__(self, durations: Buckets, call_durations: Buckets) -> None:
        self.durations = durations
        self.call_durations = call_durations
        self.prompt_tokens = 0
        self.completion_tokens = 0


@functools.cache
def _les(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` labels of ``bounds``, ``+Inf`` last: spelled once per set of bounds, not
    at every scrape."""
    return (*(floatToGoString(b) for b in bounds), "+Inf")


class Metrics:
    """The metrics of the gateway around ``router``; time-dependent values use ``clock``.
    Subscribes to the router to count its breakers' transitions."""

    def __init__(self, router: Router, clock: Callable[[], float]) -> None:
        # Collectors without a describe() (the process's) are described by a first collect,
        # as in prometheus_client's default registry, so a scrape may ask for them by name.
        self.registry = CollectorRegistry(auto_describe=True)
        self.router = router
        self.clock = clock
        names = [u.name for u in router.upstreams]
        self.answers: dict[tuple[int, str], int] = (
            {(code, name): 0 for name in names for code in _PRECREATED_CODES}
            | {(code, NO_PROVIDER): 0 for code in _PRECREATED_REFUSALS}
        )
        """Answers per (status, provider): ``gwlab_requests_total``. A plain dict, which
        Python indexes faster than a Counter; it also gives the provider outcomes, as each
        outcome has a status of its own (``gwlab_provider_requests_total``)."""
        self.rate_limited = 0
        self.rejected_by = {code: 0 for code in LIMITS}
        """429 answers by the code of the limit that refused."""
        self.durations = {name: Buckets() for name in (*names, NO_PROVIDER)}
        """Arrival to answer, per provider: ``gwlab_request_duration_seconds``."""
        self.provider_durations = {name: Buckets() for name in names}
        self.ttft: dict[str, Buckets] = collections.defaultdict(Buckets)
        """Arrival to first token of each stream, per provider that streamed: a gateway
        without streams shows none of these series (:data:`BUCKETS` make hundreds each). The
        price: PromQL's ``rate`` starts from a series' first scrape, so it leaves out a
        provider's streams before the scrape that first shows them."""
        self.tpot: dict[str, Buckets] = collections.defaultdict(lambda: Buckets(TPOT_BUCKETS))
        """Time per output token of each stream of two tokens or more, per provider that
        had one."""
        self._served = {name: _Served(self.durations[name], self.provider_durations[name]) for name in names}
        """What :meth:`completed` counts of each provider, by name: one lookup per answer."""
        self.fallbacks: collections.Counter[str] = collections.Counter({name: 0 for name in names})
        """Fallback calls per provider."""
        self.panics: collections.Counter[str] = collections.Counter({name: 0 for name in names})
        """Panic calls per provider."""
        self.attempts: collections.Counter[tuple[int, str]] = collections.Counter()
        """Outcomes of the attempts the gateway retried, per (status, provider)."""
        self.decisions = {decision: 0 for decision in RETRY_DECISIONS}
        """Retry decisions after a failed attempt: :data:`RETRY_DECISIONS`."""
        self.transitions: collections.Counter[tuple[str, str, str]] = collections.Counter(
            {(name, a.value, b.value): 0 for name in names for a, b in _DIAGRAM}
        )
        """Breaker transitions per (provider, from_state, to_state)."""
        self._none_duration = self.durations[NO_PROVIDER]
        router.subscribe(self.transition)
        self.registry.register(_Collector(self))
        # The process's CPU, memory and file descriptors (``process_*``) and the Python
        # running it (``python_info``), as prometheus_client's default registry shows them.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    # -- the request path -----------------------------------------------------------

    def rejected(self, seconds: float, code: str = RATE_LIMIT_REQUESTS) -> None:
        """A request was answered 429 after ``seconds``, for want of what the limit of
        ``code`` (:data:`LIMITS`) holds."""
        self.answers[429, NO_PROVIDER] += 1
        self.rate_limited += 1
        self.rejected_by[code] += 1
        self._none_duration.observe(seconds)

    def refused(self, status: int) -> None:
        """A request was answered ``status`` (4xx/5xx) by the gateway itself: it reached no
        provider."""
        self._count(status, NO_PROVIDER)

    def routed(self, route: Route) -> None:
        """The router chose the provider of a request by its fallback (``route.fallback`` or
        ``route.panic``; the shell skips the call for the others, nearly every one)."""
        if route.fallback:
            self.fallbacks[route.upstream.name] += 1
        elif route.panic:
            self.panics[route.upstream.name] += 1

    def completed(self, route: Route, outcome: Outcome, seconds: float, call_seconds: float,
                  prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """The provider call of ``route`` ended with ``outcome`` after ``call_seconds``; the
        answer went out ``seconds`` after the request arrived, carrying ``completion_tokens``
        for a prompt of ``prompt_tokens`` (both 0 for an answer with no reply; a reply may
        carry no tokens, and its prompt still counts)."""
        name = route.upstream.name
        key = outcome.status, name
        try:
            self.answers[key] += 1
        except KeyError:  # a status not precreated (a provider's 429, a stream error)
            self.answers[key] = 1
        served = self._served[name]
        # Buckets.observe of each histogram, written out: this runs for every answer.
        durations, calls = served.durations, served.call_durations
        durations.counts[bisect_left(durations.bounds, seconds)] += 1
        durations.sum += seconds
        calls.counts[bisect_left(calls.bounds, call_seconds)] += 1
        calls.sum += call_seconds
        if prompt_tokens:
            served.prompt_tokens += prompt_tokens
            served.completion_tokens += completion_tokens

    @property
    def tokens(self) -> dict[tuple[str, str], int]:
        """Prompt and completion tokens per (provider, kind): ``gwlab_tokens_total``."""
        return {(name, kind): count for name, served in self._served.items()
                for kind, count in zip(TOKEN_KINDS, (served.prompt_tokens, served.completion_tokens))}

    def passed(self, route: Route, status: int, seconds: float, call_seconds: float) -> None:
        """A real upstream's ``status`` (400, 404 or 422) went to the client as it came, after
        ``call_seconds`` of the call and ``seconds`` from the request's arrival."""
        name = route.upstream.name
        self._count(status, name)
        self.durations[name].observe(seconds)
        self.provider_durations[name].observe(call_seconds)

    def streamed(self, route: Route, seconds: float, ttft: float, tokens: int) -> None:
        """The stream of ``route`` ended (after its first token) ``seconds`` after the
        request arrived, its first token ``ttft`` after it, carrying ``tokens``."""
        name = route.upstream.name
        self.ttft[name].observe(ttft)
        if tokens >= 2:
            self.tpot[name].observe((seconds - ttft) / (tokens - 1))

    def decided(self, reason: str) -> None:
        """The gateway decided whether to retry a failed attempt (a :class:`~gwlab.router.Retry`'s
        ``reason``; ``not_retried``, for an answer it never retries, is not counted)."""
        if reason in self.decisions:
            self.decisions[reason] += 1

    def attempted(self, route: Route, outcome: Outcome, call_seconds: float) -> None:
        """An attempt that the gateway retries ended with ``outcome`` after ``call_seconds``
        (its last attempt is counted by :meth:`completed`)."""
        name = route.upstream.name
        self.attempts[outcome.status, name] += 1
        self.provider_durations[name].observe(call_seconds)

    def gone(self) -> None:
        """A request's client left while it waited for its next attempt: 499 under ``none``."""
        self._count(CUT_OFF, NO_PROVIDER)

    def cut_off(self, route: Route) -> None:
        """The request of ``route`` was cut off before its call ended."""
        self._count(CUT_OFF, route.upstream.name)

    def _count(self, status: int, provider: str) -> None:
        """One more answer, for a status that may not have been counted before."""
        key = status, provider
        self.answers[key] = self.answers.get(key, 0) + 1

    def transition(self, event: Transition) -> None:
        """Breaker listener: count a state change."""
        self.transitions[event.provider, event.source.value, event.target.value] += 1


FAMILIES: dict[str, tuple[type[Metric], str, tuple[str, ...]]] = {
    "gwlab_requests": (CounterMetricFamily, "Answers sent, by status code and provider.", ("code", "provider")),
    "gwlab_request_duration_seconds": (HistogramMetricFamily, "Time from a request's arrival to its answer (admitted "
                                       "and 429).", ("provider",)),
    "gwlab_rate_limited": (CounterMetricFamily, "Requests answered 429 by the token bucket.", ()),
    "gwlab_limiter_rejected": (CounterMetricFamily, "Requests answered 429, by the limit that refused.", ("limit",)),
    "gwlab_limiter_backend_errors": (CounterMetricFamily, "Admissions, refunds and changes that the limiter's Redis "
                                     "failed.", ()),
    "gwlab_provider_requests": (CounterMetricFamily, "Provider calls that ended, by outcome.", ("provider", "outcome")),
    "gwlab_provider_request_duration_seconds": (HistogramMetricFamily, "Duration of provider calls that ended.",
                                                ("provider",)),
    "gwlab_limiter_tokens": (GaugeMetricFamily, "Tokens in the rate limiter's bucket.", ()),
    "gwlab_limiter_tpm_tokens": (GaugeMetricFamily, "Tokens in the tokens-per-minute bucket (below 0 in debt).", ()),
    "gwlab_in_flight_requests": (GaugeMetricFamily, "Admitted requests not yet answered.", ()),
    "gwlab_breaker_state": (GaugeMetricFamily, "Breaker state: 1 for the current one, 0 for the others.",
                            ("provider", "state")),
    "gwlab_breaker_cooldown_seconds": (GaugeMetricFamily, "Cooldown left before the breaker half-opens.",
                                       ("provider",)),
    "gwlab_provider_weight": (GaugeMetricFamily, "Provider weight in the load balancer.", ("provider",)),
    "gwlab_fallback": (CounterMetricFamily, "Calls forced on the provider whose cooldown ends soonest, because no "
                       "provider was available.", ("provider",)),
    "gwlab_panic": (CounterMetricFamily, "Calls made while no provider was available, picked among all of them "
                    "(gateway.fallback = panic).", ("provider",)),
    "gwlab_retry_decisions": (CounterMetricFamily, "Failed attempts retried, or not for want of attempts, time or "
                              "budget.", ("decision",)),
    "gwlab_breaker_transitions": (CounterMetricFamily, "Breaker state changes.",
                                  ("provider", "from_state", "to_state")),
    "gwlab_time_to_first_token_seconds": (HistogramMetricFamily, "Time from a streamed request's arrival to its first "
                                          "token.", ("provider",)),
    "gwlab_time_per_output_token_seconds": (HistogramMetricFamily, "Time per output token of a stream, after its first "
                                            "one.", ("provider",)),
    "gwlab_tokens": (CounterMetricFamily, "Tokens of the requests answered (prompt) and of the answers (completion).",
                     ("provider", "kind")),
    "gwlab_provider_requests_running": (GaugeMetricFamily, "Calls in a slot of a provider with a capacity.",
                                        ("provider",)),
    "gwlab_provider_requests_waiting": (GaugeMetricFamily, "Calls waiting for a slot of a provider.", ("provider",)),
}
"""Every metric family a gateway's collector gives, by name (a counter's without ``_total``):
its type, help text and label names, in the order a scrape shows them. The registry learns
the names from here (:meth:`_Collector.describe`), which a scrape asking for some names only
(``/metrics?name[]=...``) needs."""


def _family(name: str, value: float | None = None) -> Metric:
    """The family ``name`` of :data:`FAMILIES` with no series yet; for one without labels,
    with its one ``value`` if given."""
    kind, documentation, labels = FAMILIES[name]
    return kind(name, documentation, value) if value is not None else kind(name, documentation, labels=labels)


class _Collector:
    """Hands the counts to prometheus_client's metric families at scrape time, with the
    values of the router's snapshot (tokens, states, cooldowns, weights, in flight) at ``now``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        """Every family :meth:`collect` may give, without series: the names the registry
        keeps for this collector."""
        return [_family(name) for name in FAMILIES]

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        state = m.router.snapshot(m.clock())
        requests = _family("gwlab_requests")
        for (code, provider), count in m.answers.items():
            requests.add_metric([code_name(code), provider], count)
        duration = _histogram("gwlab_request_duration_seconds", m.durations)
        rate_limited = _family("gwlab_rate_limited", m.rate_limited)
        rejected = _family("gwlab_limiter_rejected")
        for code, count in m.rejected_by.items():
            rejected.add_metric([LIMITS[code]], count)
        backend_errors = _family("gwlab_limiter_backend_errors", m.router.admission.errors)
        outcomes = _family("gwlab_provider_requests")
        for name in state.providers:
            for outcome in Outcome:
                key = outcome.status, name
                outcomes.add_metric([name, outcome.value], m.answers.get(key, 0) + m.attempts.get(key, 0))
        provider_duration = _histogram("gwlab_provider_request_duration_seconds", m.provider_durations)
        limiters = [_family("gwlab_limiter_tokens", state.tokens)]
        if state.tpm_tokens is not None:
            limiters.append(_family("gwlab_limiter_tpm_tokens", state.tpm_tokens))
        in_flight = _family("gwlab_in_flight_requests", state.in_flight)
        gauge = _family("gwlab_breaker_state")
        cooldown = _family("gwlab_breaker_cooldown_seconds")
        weight = _family("gwlab_provider_weight")
        fallback = _family("gwlab_fallback")
        decisions = _family("gwlab_retry_decisions")
        for decision, count in m.decisions.items():
            decisions.add_metric([decision], count)
        panic = _family("gwlab_panic")
        running = _family("gwlab_provider_requests_running")
        waiting = _family("gwlab_provider_requests_waiting")
        for name, p in state.providers.items():
            running.add_metric([name], p.busy)
            waiting.add_metric([name], p.waiting)
            for value in STATES:
                gauge.add_metric([name, value], 1.0 if value == p.state.value else 0.0)
            cooldown.add_metric([name], p.cooldown_left)
            weight.add_metric([name], p.weight)
            fallback.add_metric([name], m.fallbacks[name])
            panic.add_metric([name], m.panics[name])
        transitions = _family("gwlab_breaker_transitions")
        for labels, count in m.transitions.items():
            transitions.add_metric(list(labels), count)
        ttft = _histogram("gwlab_time_to_first_token_seconds", m.ttft)
        tpot = _histogram("gwlab_time_per_output_token_seconds", m.tpot)
        used = _family("gwlab_tokens")
        for labels, count in m.tokens.items():
            used.add_metric(list(labels), count)
        yield from (requests, duration, rate_limited, rejected, backend_errors, outcomes, provider_duration,
                    *limiters, in_flight, gauge, cooldown, weight, fallback, panic, decisions, transitions, ttft, tpot, used, running,
                    waiting)


def _histogram(name: str, series: dict[str, Buckets]) -> HistogramMetricFamily:
    """The histogram family ``name`` of :data:`FAMILIES` with one series per provider."""
    family = _family(name)
    for provider, buckets in series.items():
        family.add_metric([provider], buckets.cumulative(), buckets.sum)
    return family


class Scrapes:
    """A collector on the gateway's registry that adds no metric but notes each scrape, so
    that a run can wait for one last scrape before the metrics server goes."""

    def __init__(self) -> None:
        self.count = 0
        self.next = asyncio.Event()

    def describe(self) -> list:
        return []

    def collect(self) -> list:
        self.count += 1
        self.next.set()
        return []

    async def final(self, stop: asyncio.Event) -> None:
        """Wait for one more scrape, at most :data:`config.FINAL_SCRAPE` seconds, if there
        was any before (someone is watching); a signal not yet seen ends the wait."""
        if not self.count:
            return
        self.next.clear()
        waits = [asyncio.ensure_future(self.next.wait())]
        if not stop.is_set():
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=config.FINAL_SCRAPE, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
