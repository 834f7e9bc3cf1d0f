"""Client behaviour, shared by the real load generator and the simulator.

Closed loop: each of N clients sends a request, waits for the answer, then waits
:func:`pause_after` (its think time, plus the server's ``retry-after-ms`` after a 429 or a 503) and
sends again. The offered rate then falls as the gateway slows down, and requests that would
have been sent during a stall are never sent: measured latencies look better than what an
independent stream of users would see (coordinated omission).

Open loop: requests arrive as a Poisson process at the offered rate whatever happens to
earlier ones (:func:`next_arrival`); latency is measured from each request's scheduled send
time, so a stall shows in full.

A *user request* (what a person asked for) may take several *attempts* (what reached the
gateway): a client may stop waiting for an answer after ``workload.timeout`` seconds, and
retries a failed attempt as its ``workload.retry_policy`` says (:class:`ClientRetry`). A user
request ends at its first success, or when its policy gives up (DESIGN, "Retries and
fallbacks"); a closed-loop client waits for its user request to end before its think time.
"""

from __future__ import annotations

import math
from random import Random

from gwlab.config import OPENAI_MAX_RETRY_AFTER, ConfigError, Scenario, WorkloadConfig
from gwlab.stats import CLIENT_TIMEOUT, RATE_LIMITED, TRANSPORT_ERROR, UNAVAILABLE

RETRIED = frozenset((408, 409, RATE_LIMITED, 500, 502, UNAVAILABLE, 504, TRANSPORT_ERROR, CLIENT_TIMEOUT))
"""The outcomes of an attempt a client retries: those the ``openai`` SDK retries (408, 409,
429, 5xx, no answer, a timeout; ``_should_retry`` in its ``_base_client.py``). Never a stream
that failed after its first byte (the SDK raises it to the caller mid-iteration) nor another
4xx."""


def next_arrival(now: float, rate: float, rng: Random) -> float:
    """The next Poisson arrival after ``now`` at ``rate`` per second (one draw from ``rng``)."""
    return now - math.log1p(-rng.random()) / rate


def pause_after(status: int, retry_after: float, think_time: float) -> float:
    """Seconds a closed-loop client waits after an answer before its next request: its
    think time, and the answer's retry-after when it is a 429 or a 503 (RFC 9110 § 10.2.3
    gives both a ``Retry-After``)."""
    return think_time + (retry_after if status == RATE_LIMITED or status == UNAVAILABLE else 0.0)


def follows_users(w: WorkloadConfig) -> bool:
    """Whether the clients of ``w`` time out or retry: their user requests are then followed
    apart from their attempts (:data:`gwlab.stats.USER_OUTCOMES`)."""
    return w.retry_policy != "none" or w.timeout > 0


class ClientRetry:
    """The retries of one user request under the workload ``w``'s ``retry_policy``, drawing
    its jitter from ``rng``. :meth:`after` decides after each failed attempt.

    - ``none``: never retries.
    - ``openai_sdk``: the ``openai`` SDK's rule (3.57, ``_calculate_retry_timeout``): the
      server's retry-after when it is above 0 and at most :data:`OPENAI_MAX_RETRY_AFTER`
      seconds; no retry when it is longer; otherwise ``min(retry_delay × 2^n,
      retry_max_delay) × (1 - 0.25 × U)`` before retry n + 1 (n = 0, 1, ...), U uniform on
      [0, 1) (the SDK's own 0.5 s and 8 s are the defaults).
    - ``fixed`` and ``adaptive``: ``retry_delay`` each time, or the server's retry-after when
      longer (``adaptive`` also throttles, :class:`gwlab.retry.AdaptiveThrottle`).
    - ``exponential_jitter``: full jitter (Brooker, "Exponential Backoff And Jitter", 2015),
      a uniform draw from 0 to ``min(retry_max_delay, retry_delay × 2^n)``, or the server's
      retry-after when longer.

    Every policy but ``none`` retries the outcomes of :data:`RETRIED`, ``retries`` times at
    most."""

    __slots__ = ("policy", "retries", "delay", "cap", "made", "_rng")

    def __init__(self, w: WorkloadConfig, rng: Random) -> None:
        self.policy = w.retry_policy
        self.retries = 0 if w.retry_policy == "none" else w.retries
        self.delay, self.cap = w.retry_delay, w.retry_max_delay
        self.made = 0
        """Retries decided so far."""
        self._rng = rng

    def after(self, status: int, retry_after: float) -> float | None:
        """Seconds to wait before the next attempt, after one that ended in ``status`` with
        the server's ``retry_after`` in seconds (0 when none); ``None`` when the user request
        ends with this attempt."""
        if self.made >= self.retries or status not in RETRIED:
            return None
        policy, n = self.policy, self.made
        if policy == "openai_sdk":
            if retry_after > OPENAI_MAX_RETRY_AFTER:
                return None
            self.made += 1
            if retry_after > 0:
                return retry_after
            return min(self.delay * 2.0 ** n, self.cap) * (1 - 0.25 * self._rng.random())
        self.made += 1
        if policy == "exponential_jitter":
            return max(self._rng.uniform(0.0, min(self.cap, self.delay * 2.0 ** n)), retry_after)
        return max(self.delay, retry_after)


def check_reservation(s: Scenario, source: str = "scenario") -> None:
    """Raise :class:`~gwlab.config.ConfigError`, naming ``source``, if the requests of ``s``'s
    workload reserve more tokens than its gateway's tokens limit, or every provider's own,
    can ever admit: every request would be answered 400 (``context_exceeds_limit``), and a
    run, simulated or live, would show nothing else. Every such request reserves the same
    tokens: its prompt and its cap (``workload.max_tokens``, else
    ``limiter.default_max_tokens``)."""
    w, limiter = s.workload, s.limiter
    reserved = w.prompt_tokens + (w.max_tokens or limiter.default_max_tokens)
    cap = f"workload.max_tokens = {w.max_tokens}" if w.max_tokens else \
        f"limiter.default_max_tokens = {limiter.default_max_tokens} (workload.max_tokens = 0)"
    reserves = f"each request reserves {reserved} tokens (workload.prompt_tokens = {w.prompt_tokens} and {cap})"
    if limiter.tpm and reserved > limiter.tpm:
        raise ConfigError(
            f"{source}: limiter.tpm = {limiter.tpm}: {reserves}, more than the limit can ever admit; "
            f"expected a limiter.tpm >= {reserved}, or a smaller workload.max_tokens"
        )
    used = [p for p in s.providers if p.weight > 0]
    if all(0 < p.tpm < reserved for p in used):
        limits = ", ".join(f"providers.{p.name}.tpm = {p.tpm}" for p in used)
        raise ConfigError(
            f"{source}: {limits}: {reserves}, more than any provider's limit can ever take; "
            f"expected a providers.NAME.tpm >= {reserved} (or 0), or a smaller workload.max_tokens"
        )
