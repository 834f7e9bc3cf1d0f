"""Several replicas of one gateway, as the simulator models them (DESIGN, "Upstreams and
replicas").

Each replica is a :class:`~gwlab.router.Router` of its own: its own breakers (as in Envoy, a
replica learns that a provider is down from its own calls), its own balancer and retry
budget, drawing from the streams of its seed (:func:`gwlab.streams.replica_seed`). They
share what a real deployment shares: the providers (one :class:`~gwlab.upstream.Host` each:
their calls' draws, their capacity, their own limits) and, with ``limiter.backend =
"redis"``, one admission, the same class as a local bucket (virtual time has no Redis: the
shared bucket is exact). With ``"local"`` each replica admits with buckets of its own, so N
replicas let N times the rate through. Which replica a request reaches is the simulator's
draw (the kernel spreading connections, live).

One replica is the plain gateway: its router is built exactly as :func:`gwlab.sim.simulate`
builds it without replicas, so its runs are unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from gwlab.admission import LocalAdmission
from gwlab.breaker import AVAILABILITY
from gwlab.config import Scenario
from gwlab.router import ProviderState, Router, Snapshot, make_hosts
from gwlab.streams import replica_seed

_UNAVAILABILITY = {state: i for i, state in enumerate(AVAILABILITY)}
"""Each breaker state's rank in :data:`~gwlab.breaker.AVAILABILITY`: the higher, the less
available."""


class Fleet:
    """``count`` replicas of the gateway of ``scenario`` at ``now``, seeded ``seed``:
    :attr:`routers` (replica ``i`` is ``routers[i]``), which share the providers and, with
    ``limiter.backend = "redis"``, the admission. Raises :class:`ValueError` for a
    ``count`` below 1."""

    def __init__(self, scenario: Scenario, seed: int, count: int, now: float = 0.0) -> None:
        if count < 1:
            raise ValueError(f"count = {count}: expected at least 1 replica")
        hosts = make_hosts(scenario, seed, now)
        self.shared = count == 1 or scenario.limiter.backend == "redis"
        """Whether one admission serves every replica."""
        admission = LocalAdmission(scenario.limiter, now) if count > 1 and self.shared else None
        self.routers = tuple(Router(scenario, replica_seed(seed, i), now, admission, hosts) for i in range(count))
        self.owner = {u: router for router in self.routers for u in router.upstreams}
        """The router of each :class:`~gwlab.upstream.Upstream` (a route's ``upstream``): the
        replica that routed a call completes it, and retries it."""

    def configure(self, scenario: Scenario, now: float) -> None:
        """Every replica switches to ``scenario`` at ``now`` (:meth:`Router.configure`; the
        hosts and a shared admission take the change once, as the same change again at the
        same instant changes nothing)."""
        for router in self.routers:
            router.configure(scenario, now)

    def snapshot(self, now: float) -> Snapshot:
        """The replicas at ``now`` as one gateway: the tokens, burst and rate of their
        admission (summed over the replicas' own buckets when each has its own: together
        they admit the sum), the calls in flight summed, and per provider the least
        available breaker state among the replicas (healthy, failing, half-open, open) with
        the longest cooldown left in it, the calls in flight and openings summed, and its
        host's busy and waiting calls (shared)."""
        snapshots = [router.snapshot(now) for router in self.routers]
        if len(snapshots) == 1:
            return snapshots[0]
        return merge(snapshots, self.shared)


def merge(snapshots: Sequence[Snapshot], shared: bool) -> Snapshot:
    """``snapshots`` of replicas taken at the same instant as one (see
    :meth:`Fleet.snapshot`); ``shared``: whether they admit with one admission, whose
    levels are then taken once."""
    first = snapshots[0]
    admissions = snapshots[:1] if shared else snapshots
    tpm = None if first.tpm_tokens is None else sum(s.tpm_tokens for s in admissions)  # type: ignore[misc]
    providers = {}
    for name, state in first.providers.items():
        each = [s.providers[name] for s in snapshots]
        worst = max(each, key=lambda p: (_UNAVAILABILITY[p.state], p.cooldown_left))
        providers[name] = ProviderState(worst.state, worst.cooldown_left, state.weight,
                                        sum(p.in_flight for p in each), sum(p.trips for p in each),
                                        state.busy, state.waiting)
    return replace(first, tokens=sum(s.tokens for s in admissions), burst=sum(s.burst for s in admissions),
                   rate=sum(s.rate for s in admissions), in_flight=sum(s.in_flight for s in snapshots),
                   providers=providers, tpm_tokens=tpm)
