"""Checks for ``10_scale_out``: a limit split over replicas that keep it each for themselves,
and how long a gateway that lost its Redis goes on failing open or closed.

:func:`check_split_share`: :data:`REPLICAS` replicas without Redis, each limited to
:data:`LIMIT` / :data:`REPLICAS` requests a second, behind which :data:`CONNECTIONS`
keep-alive connections send :data:`LIMIT` / :data:`CONNECTIONS` a second each, every
connection placed on a replica at random, independently and uniformly (as ``SO_REUSEPORT``'s
hash of its addresses places it). The answer is the mean share of the requests admitted over
the placements (:func:`split_share`): a replica holding k connections admits min(k, C / R)
of them in connections' worth, so the share is (R / C) E[min(k, C / R)] with k ~ Binomial(C,
1 / R). No chance is involved in the verdict: the answer must lie within
:data:`SPLIT_TOLERANCE` of that expectation. As a second opinion the check measures the share
with real :class:`~gwlab.limiter.TokenBucket` objects on plain ``now`` values
(:func:`simulated_split_share`: :data:`PLACEMENTS` placements, each connection at a random
phase, counted after :data:`SPLIT_WARMUP` seconds in which the buckets' bursts drain) and
shows it beside the formula. The characteristic wrong answers miss by far more than the
tolerance: an even spread (all admitted, 1), the chance that a replica gets any connection
at all (1 − (3/4)⁸ ≈ 0.900) and the share of the replicas that stay within their limit
(P(k <= 2) ≈ 0.679).

:func:`check_reconnect`: a function of the length of a Redis outage giving the seconds, from
the gateway's first failed call to Redis (at the outage's start, with requests arriving at
every moment), until it uses Redis again: the first try at or after the outage's end, the
tries coming after waits of :data:`~gwlab.config.REDIS_RECONNECT_BASE` that double after each
failure in a row up to :data:`~gwlab.config.REDIS_RECONNECT_MAX` (:func:`back_in_use`, as
:class:`gwlab.redis_bucket.RedisAdmission` waits; ``tests/test_exercises_scale_out.py`` runs
one against a real redis-server stopped and started on a fake clock). Right within
:data:`RECONNECT_TOLERANCE` at each of :data:`OUTAGES`, which lie away from the tries' times
so that rounding decides nothing. The characteristic wrong answers: the outage itself (Redis
tried at every request), waits that double without their cap (6.3 s for an outage of 5 s),
and waits that never double (steps of the base).
"""

from __future__ import annotations

import math
from typing import Callable

from gwlab import config
from gwlab.exercises import Verdict, call, known_mistake, number, shown, wrong_kind
from gwlab.limiter import TokenBucket
from gwlab.streams import stream

# -- exercise 1: a limit split over the replicas -------------------------------------------

REPLICAS = 4
"""Replicas without a shared limit."""
CONNECTIONS = 8
"""Keep-alive client connections, each placed on one replica for its life."""
LIMIT = 100.0
"""Requests a second the replicas should admit together; each gets LIMIT / REPLICAS, and each
connection sends LIMIT / CONNECTIONS, so that the clients offer exactly the limit."""
SPLIT_TOLERANCE = 0.005
"""Absolute error allowed on the share."""
PLACEMENTS = 800
"""Random placements of the connections the second opinion measures."""
SPLIT_WARMUP, SPLIT_SECONDS = 5.0, 10.0
"""Seconds each placement runs before its requests are counted (the buckets start full and
drain at the excess rate, 2 s for three connections on a replica), and seconds counted."""


def split_share(replicas: int = REPLICAS, connections: int = CONNECTIONS) -> float:
    """The mean share of the requests admitted when ``replicas`` replicas each admit 1 /
    ``replicas`` of a limit and ``connections`` connections, each offering 1 / ``connections``
    of it, land on replicas at random: (R / C) E[min(k, C / R)], k ~ Binomial(C, 1 / R) the
    connections of one replica. Between 0 and 1."""
    cap, p = connections / replicas, 1 / replicas
    return sum(math.comb(connections, k) * p**k * (1 - p) ** (connections - k) * min(k, cap)
               for k in range(connections + 1)) / cap


def simulated_split_share(seed: int = 1, placements: int = PLACEMENTS) -> tuple[float, float]:
    """:func:`split_share` for :data:`REPLICAS` and :data:`CONNECTIONS`, measured: for each of
    ``placements`` random placements (the named stream ``split`` of ``seed``), each replica's
    :class:`~gwlab.limiter.TokenBucket` (rate and burst LIMIT / REPLICAS) takes its
    connections' requests, evenly spaced from a random phase, and the share admitted after
    :data:`SPLIT_WARMUP` is counted. Returns the mean share over the placements and its
    standard error."""
    rng = stream(seed, "split")
    each, gap = LIMIT / REPLICAS, CONNECTIONS / LIMIT
    sends = int((SPLIT_WARMUP + SPLIT_SECONDS) / gap)
    shares = []
    for _ in range(placements):
        where = [rng.randrange(REPLICAS) for _ in range(CONNECTIONS)]
        phases = [rng.random() * gap for _ in range(CONNECTIONS)]
        admitted = offered = 0
        for replica in range(REPLICAS):
            bucket = TokenBucket(each, each)
            arrivals = sorted(phase + i * gap for phase, placed in zip(phases, where) if placed == replica
                              for i in range(sends))
            for now in arrivals:
                taken = bucket.try_acquire(now)
                if now >= SPLIT_WARMUP:
                    offered += 1
                    admitted += taken
        shares.append(admitted / offered)
    mean = sum(shares) / len(shares)
    spread = math.sqrt(sum((s - mean) ** 2 for s in shares) / (len(shares) - 1))
    return mean, spread / math.sqrt(len(shares))


def check_split_share(answer: float | None) -> Verdict:
    """Right when ``answer`` is within :data:`SPLIT_TOLERANCE` of :func:`split_share`."""
    share = number(answer)
    if share is None or not 0 <= share <= 1:
        return wrong_kind(answer, "the share of the requests admitted, a number from 0 to 1 (for example answer = 0.5)")
    answer = share
    want = split_share()
    cap = CONNECTIONS // REPLICAS
    if abs(answer - want) > SPLIT_TOLERANCE:
        none = (1 - 1 / REPLICAS) ** CONNECTIONS
        within = sum(math.comb(CONNECTIONS, k) * (1 / REPLICAS) ** k * (1 - 1 / REPLICAS) ** (CONNECTIONS - k)
                     for k in range(cap + 1))
        why = known_mistake(answer, [
            (1.0, f"that is an even spread, {cap} connections on each replica: the kernel places each connection at "
                  "random, so some replicas get more than their limit can serve while others leave theirs unused"),
            (1 - none, "that is the chance that a replica gets any connection at all"),
            (within, f"that is the chance that a replica gets at most {cap} connections, the share of the replicas "
                     "within their limit; the question is the share of the requests"),
        ], SPLIT_TOLERANCE)
        return Verdict(False, f"{answer:.4g} is {'too high' if answer > want else 'too low'}"
                              + (f": {why}" if why else ": a replica with k connections admits min(k, "
                                 f"{cap}) connections' worth; average that over k ~ Binomial({CONNECTIONS}, "
                                 f"1/{REPLICAS})"))
    measured, error = simulated_split_share()
    return Verdict(True, f"{want:.3f} (real token buckets over {PLACEMENTS} random placements: {measured:.3f} ± "
                         f"{error:.3f}). Split {REPLICAS} ways, the limit admits {want:.0%} of traffic that is "
                         f"exactly the limit: a local limit is N times too much when each replica has all of it, "
                         "and too little when they share it out. One bucket in Redis admits it all")


# -- exercise 2: how long the limiter goes on failing ------------------------------------

OUTAGES = (0.05, 0.25, 1.0, 5.0, 12.0, 60.0)
"""Lengths of Redis outages (seconds) at which an answer is compared with :func:`back_in_use`."""
RECONNECT_TOLERANCE = 1e-6
"""Seconds an answer may be off at each outage."""


def back_in_use(outage: float, base: float = config.REDIS_RECONNECT_BASE,
                longest: float = config.REDIS_RECONNECT_MAX) -> float:
    """Seconds from the gateway's first failed call to Redis until it uses Redis again, when
    Redis is back ``outage`` seconds after that call (``outage`` > 0) and requests arrive at
    every moment: the first try at or after ``outage``, the tries coming after waits of
    ``base`` that double after each failure up to ``longest``."""
    at, wait = 0.0, base
    while at < outage:
        at += wait
        wait = min(longest, 2 * wait)
    return at


def check_reconnect(answer: Callable[[float], float] | None) -> Verdict:
    """Right when ``answer(outage)`` gives :func:`back_in_use` at every outage of
    :data:`OUTAGES`, within :data:`RECONNECT_TOLERANCE`."""
    if not callable(answer):
        return Verdict(False, f"answer = {shown(answer)}: expected a function of the outage's length in seconds (for "
                              "example def answer(outage): return outage + 1)")
    base, longest = config.REDIS_RECONNECT_BASE, config.REDIS_RECONNECT_MAX
    for outage in OUTAGES:
        want = back_in_use(outage)
        got = call(answer, outage)
        if isinstance(got, str):
            return Verdict(False, f"answer({outage:g}) {got}")
        if not math.isfinite(got) or abs(got - want) > RECONNECT_TOLERANCE:
            why = known_mistake(got, [
                (outage, "that is Redis tried at every request: after a failed call the gateway leaves it alone "
                         "for a while, and follows its failure mode meanwhile"),
                (back_in_use(outage, base, math.inf), f"the waits stop doubling at {longest:g} s"),
                (back_in_use(outage, base, base), "the wait doubles after each failure in a row"),
            ], 1e3 * RECONNECT_TOLERANCE)
            return Verdict(False, f"for an outage of {outage:g} s your function gives {got:.6g} s, the gateway uses "
                                  f"Redis again after {want:.6g} s" + (f": {why}" if why else ""))
    return Verdict(True, f"right at every outage: tries at 0, {base:g}, {3 * base:g}, {7 * base:g} s ..., "
                         f"then every {longest:g} s. An outage of 5 s costs {back_in_use(5.0):g} s of failing "
                         f"open or closed, and never more than {longest:g} s past its end")
