"""Simulated LLM providers: how long a call takes, how many tokens it gives and whether it
fails.

A :class:`Provider` turns its configuration and its private random streams into a
:class:`Call`: a duration, an outcome and, for a provider with token timing, the time to its
first token and the tokens of its answer. Shells carry the call out: the server sleeps for
the duration (streaming the tokens on the way), the simulator schedules an event after it.

Every call draws exactly one number from each of the two seed streams (latency, errors),
whatever the distribution, error rate or outage, and one from each stream of the token model
that the provider's configuration turns on (time to first token, output length, mid-stream
errors); every draw inverts the distribution's CDF. So the n-th call to a provider always
sees the same numbers for a given seed: changing one provider's parameters, or any other
provider's, leaves every draw of this one unchanged (common random numbers), and a sweep
over a parameter shows its effect rather than noise. A provider without token timing draws
nothing more than the seed's did, so its results are the seed's, byte for byte.

With ``ttft`` (see :class:`~gwlab.config.ProviderConfig`), a call's first token comes after
the drawn time to first token and each further one ``1 / decode_rate`` later. The gateway's
``timeout`` bounds a stream's time to first token and a whole answer otherwise (DESIGN,
"LLM traffic"). A drawn error fails the call before its first token (502); a mid-stream
error (probability ``stream_error_rate``) after a share of its output drawn uniformly, which
a stream sees as a failure after its first byte and any other request as a 502.
"""

from __future__ import annotations

import enum
import math
import statistics
from random import Random
from statistics import NormalDist
from typing import Callable, NamedTuple

from gwlab.config import MAX_OUTPUT_TOKENS, ProviderConfig
from gwlab.stats import STREAM_ERROR
from gwlab.streams import stream

REPLY = "This is a simulated answer from gwlab provider {}."
"""The fixed reply of a provider without a length model, ``{}`` its name (one word): a token
is a word of it (:func:`gwlab.wire.reply_pieces`)."""

_STANDARD_NORMAL = NormalDist()
_Z99 = _STANDARD_NORMAL.inv_cdf(0.99)
_TINY = 1e-300
_inv_cdf = getattr(statistics, "_normal_dist_inv_cdf", None)
"""The standard normal's quantile as :meth:`NormalDist.inv_cdf` computes it, without that
method's Python-level checks (``0 < u < 1`` holds here): called for every draw of a
log-normal. It is private to :mod:`statistics`, hence the method when it is missing."""


class Outcome(enum.Enum):
    """How a provider call ended: ``status`` is what the gateway answers with, ``ok`` whether
    the breaker counts a success. (Plain attributes of each member, as they are read on
    every request.)"""

    SUCCESS = "success", 200
    ERROR = "error", 502
    TIMEOUT = "timeout", 504
    STREAM_ERROR = "stream_error", STREAM_ERROR
    RATE_LIMITED = "rate_limited", 429

    def __new__(cls, value: str, status: int) -> Outcome:
        member = object.__new__(cls)
        member._value_ = value
        member.status = status
        member.ok = value == "success"
        return member

    status: int
    ok: bool


_SUCCESS, _ERROR, _TIMEOUT, _STREAM_ERROR = Outcome.SUCCESS, Outcome.ERROR, Outcome.TIMEOUT, Outcome.STREAM_ERROR
_RATE_LIMITED = Outcome.RATE_LIMITED


class Call(NamedTuple):
    """A provider call decided in advance: it ends after ``duration`` seconds with ``outcome``.
    (A named tuple: immutable, and cheaper to create than a frozen dataclass.)

    ``ttft`` is the time to its first token in seconds as drawn (the latency for a provider
    without token timing: its answer comes whole), past ``duration`` when the call timed out
    before it; ``tokens`` the output tokens it gives (by the end, or before a mid-stream
    error), 0 when the provider has no length model: it answers with its fixed reply, all of
    it at the first token (the first ``max_tokens`` of them, counted here, when the
    request's cap is shorter); ``capped`` whether the request's ``max_tokens`` cut the answer
    short (``finish_reason: "length"``); ``retry_after``, for a call the provider refused
    (429: its queue was full, or its own rate limit), the seconds after which it would take
    one."""

    duration: float
    outcome: Outcome
    ttft: float = 0.0
    tokens: int = 0
    capped: bool = False
    retry_after: float = 0.0

    def waited(self, seconds: float, timeout: float, streaming: bool) -> Call:
        """This call, started ``seconds`` after its attempt began (it waited for a slot).
        The gateway's ``timeout`` runs from the attempt's start, the wait included (DESIGN,
        "LLM traffic"): a call whose first token (a stream) or end (any other) would now
        come past it ends in a TIMEOUT when the timeout runs out."""
        left = max(0.0, timeout - seconds)
        if self.outcome is Outcome.TIMEOUT:
            return self._replace(duration=min(self.duration, left))
        if (self.ttft if streaming else self.duration) > left:
            return Call(left, Outcome.TIMEOUT, self.ttft)
        return self


_new_call = tuple.__new__


def sampler(distribution: str, median: float, p99: float) -> Callable[[float], float]:
    """The quantile function (``u`` in 0 <= u < 1 to a value) of a ``"fixed"`` value
    ``median``, an ``"exponential"`` of mean ``median``, or a ``"lognormal"`` of that median
    and ``p99``, its constants worked out once. Finite for every ``u`` that ``random()``
    returns: validation keeps a log-normal's p99 within
    :data:`~gwlab.config.MAX_P99_RATIO` times its median."""
    if distribution == "fixed":
        return lambda u: median
    if distribution == "exponential":
        return lambda u: -median * math.log1p(-u)
    sigma = math.log(p99 / median) / _Z99
    exp = math.exp
    if _inv_cdf is None:
        inv_cdf = _STANDARD_NORMAL.inv_cdf
        return lambda u: median * exp(sigma * inv_cdf(u if u > _TINY else _TINY))
    return lambda u: median * exp(sigma * _inv_cdf(u if u > _TINY else _TINY, 0.0, 1.0))


def latency_quantile(config: ProviderConfig, u: float) -> float:
    """The latency at quantile ``u`` (0 <= u < 1) of the provider's distribution."""
    return sampler(config.distribution, config.latency, config.p99)(u)


def mean_latency(config: ProviderConfig) -> float:
    """The distribution's mean, before the timeout cuts it off."""
    if config.distribution == "lognormal":
        sigma = math.log(config.p99 / config.latency) / _Z99
        return config.latency * math.exp(sigma * sigma / 2)
    return config.latency


class Forwarded:
    """A real upstream (``kind = "openai"``) as the router sees it: its calls are not decided
    in advance but observed by the shell, which forwards them (:mod:`gwlab.forward`). A call
    is known only to end by the gateway's ``timeout`` at the latest, which is what the
    provider's capacity counts on; it draws no random number, so the simulated providers
    beside it draw as they would without it."""

    def __init__(self, config: ProviderConfig) -> None:
        self.configure(config)

    def configure(self, config: ProviderConfig) -> None:
        """New parameters (under the same name) from the next call on."""
        self.config = config

    def call(self, timeout: float, streaming: bool = False, max_tokens: int | None = None,
             idle_timeout: float = math.inf) -> Call:
        """The call as it is known before it is made: a TIMEOUT after ``timeout`` seconds,
        unless the shell observes it ending otherwise."""
        return _new_call(Call, (timeout, _TIMEOUT, timeout, 0, False, 0.0))


def make_provider(config: ProviderConfig, seed: int, draws: str = "") -> Provider | Forwarded:
    """The provider of ``config``: a simulated :class:`Provider` drawing from its streams
    under ``seed`` and ``draws``, or a :class:`Forwarded` real upstream."""
    return Forwarded(config) if config.kind == "openai" else Provider(config, seed, draws)


class Provider:
    """One simulated provider with its own random streams, named after it under ``seed``
    (``NAME/latency``, ``NAME/errors`` ...), or after it and ``draws`` (``NAME/retry/latency``
    ... for ``draws = "retry/"``: the calls of retries, which then draw apart from first
    attempts; DESIGN, "Retries and fallbacks")."""

    def __init__(self, config: ProviderConfig, seed: int, draws: str = "") -> None:
        self.configure(config)
        name = f"{config.name}/{draws}"
        self._latency_rng = stream(seed, f"{name}latency")
        self._error_rng = stream(seed, f"{name}errors")
        self._ttft_rng = stream(seed, f"{name}ttft")
        self._output_rng = stream(seed, f"{name}output")
        self._stream_error_rng = stream(seed, f"{name}stream_errors")

    @property
    def name(self) -> str:
        return self.config.name

    def configure(self, config: ProviderConfig) -> None:
        """New parameters (under the same name) from the next call on."""
        self.config = config
        self._tokens = bool(config.ttft or config.output_tokens or config.stream_error_rate)
        """Whether calls follow the token model (read on every call: kept beside the config)."""
        self._latency = sampler(config.distribution, config.latency, config.p99)
        self._ttft = sampler(config.ttft_distribution, config.ttft, config.ttft_p99)
        self._output = sampler(config.output_distribution, config.output_tokens, config.output_p99)
        self._reply_tokens = len(REPLY.format(config.name).split())
        """The tokens of the fixed reply given without a length model."""
        self._hang, self._down = config.outage == "hang", config.outage == "error"
        """Whether an outage holds every call to the timeout, or fails it at once."""
        self._gap = 1.0 / config.decode_rate if config.ttft else 0.0
        """Seconds between two tokens after the first (0 without ttft: the answer comes whole)."""

    def call(self, timeout: float, streaming: bool = False, max_tokens: int | None = None,
             idle_timeout: float = math.inf) -> Call:
        """Decide the next call of a request that streams or not, whose output may hold at
        most ``max_tokens`` (``None``: no cap). An outage ``"hang"``, or a time beyond
        ``timeout`` (a stream's first token, any other answer's end), ends in a TIMEOUT after
        ``timeout`` seconds; otherwise an ERROR (outage ``"error"``, or with probability
        ``error_rate``) before the first token, a mid-stream error (also a stream whose
        tokens come more than ``idle_timeout`` seconds apart: it fails that long after its
        first), or a SUCCESS."""
        config = self.config
        u = self._latency_rng.random()
        failed = self._error_rng.random() < config.error_rate
        # Calls are built as Call(...) builds them but without its Python-level __new__, and
        # bounds compared rather than passed to min and max: this runs for every request.
        if not self._tokens:
            latency = self._latency(u)
            if self._hang or latency > timeout:
                return _new_call(Call, (timeout, _TIMEOUT, latency, 0, False, 0.0))
            if failed or self._down:
                return _new_call(Call, (latency, _ERROR, latency, 0, False, 0.0))
            if max_tokens is not None and max_tokens < self._reply_tokens:  # the fixed reply cut short
                return _new_call(Call, (latency, _SUCCESS, latency, max_tokens, True, 0.0))
            return _new_call(Call, (latency, _SUCCESS, latency, 0, False, 0.0))
        # Token timing, a length model or mid-stream errors: the latency's draw ``u`` is always
        # made, and its value is needed only without ttft.
        if config.output_tokens:
            # round() of a float looks its __round__ up anew on every call: called directly.
            wanted = self._output(self._output_rng.random()).__round__()
            if wanted < 1:
                wanted = 1
            elif wanted > MAX_OUTPUT_TOKENS:
                wanted = MAX_OUTPUT_TOKENS
            capped = max_tokens is not None and wanted > max_tokens
            tokens = max_tokens if capped else wanted
        else:  # the fixed reply, whole at the first token: timed as one token, cut short by a shorter cap
            capped = max_tokens is not None and max_tokens < self._reply_tokens
            tokens = 0
        gap = self._gap
        first = self._ttft(self._ttft_rng.random()) if config.ttft else self._latency(u)
        rate = config.stream_error_rate
        broken = self._stream_error_rng.random() if rate else 1.0
        last = first + ((tokens if tokens > 1 else 1) - 1) * gap
        if self._hang or (first if streaming else last) > timeout:
            return _new_call(Call, (timeout, _TIMEOUT, first, 0, False, 0.0))
        if failed or self._down:
            return _new_call(Call, (first, _ERROR, first, 0, False, 0.0))
        failing = broken < rate
        # Given that it fails, the draw is uniform below the rate: its share of the rate is
        # the share of the output given before the failure (at least the first token).
        sent = max(1, math.ceil(broken / rate * tokens)) if failing else tokens
        if streaming and sent > 1 and gap > idle_timeout:  # the second token comes too late
            return Call(first + idle_timeout, _STREAM_ERROR, first, 1)
        if failing:
            return _new_call(Call, (first + (sent - 1) * gap, _STREAM_ERROR if streaming else _ERROR, first, sent,
                                    False, 0.0))
        return _new_call(Call, (last, _SUCCESS, first, max_tokens if capped else tokens, capped, 0.0))
