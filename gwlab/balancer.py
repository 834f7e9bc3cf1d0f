"""Load-balancing policies: which eligible provider gets the next request.

A balancer sees only the providers whose breakers let a call through right now, as
:class:`Choice` objects (name, weight, requests in flight), and returns one of them, or
``None`` when their total weight is 0 (which the router treats as "none available"). Weights
are therefore renormalised over the eligible set by construction.

Policies are registered by name so that a scenario can choose one (``gateway.balancer``);
:func:`register` adds your own, and the same object then drives both the live gateway and
the simulator.
"""

from __future__ import annotations

from random import Random
from typing import Callable, Protocol, Sequence


class Choice(Protocol):
    """What a balancer may look at: a provider's name, weight and in-flight count."""

    name: str
    weight: float
    in_flight: int


class Balancer(Protocol):
    def pick(self, choices: Sequence[Choice], rng: Random) -> Choice | None:
        """One of ``choices`` (all eligible now), or ``None`` if their weights sum to 0."""


class WeightedRandom:
    """The seed's policy: each provider with probability weight / total weight."""

    def pick(self, choices: Sequence[Choice], rng: Random) -> Choice | None:
        total = 0.0
        for choice in choices:  # left to right, as every Python adds (sum() compensates from 3.12)
            total += choice.weight
        if total <= 0:
            return None
        point = rng.random() * total
        for choice in choices:
            point -= choice.weight
            if point < 0:
                return choice
        # Rounding can leave ``point`` a hair above 0 after the last subtraction.
        return next(c for c in reversed(choices) if c.weight > 0)


class RoundRobin:
    """Smooth weighted round robin (as in nginx): over every ``total`` picks each provider
    gets exactly its weight's share, spread out evenly rather than in runs. Uses no randomness."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def pick(self, choices: Sequence[Choice], rng: Random) -> Choice | None:
        total = sum(c.weight for c in choices)
        if total <= 0:
            return None
        best = None
        for c in choices:
            score = self._current.get(c.name, 0.0) + c.weight
            self._current[c.name] = score
            if c.weight > 0 and (best is None or score > self._current[best.name]):
                best = c
        self._current[best.name] -= total
        return best


class PowerOfTwo:
    """Power of two choices: draw two distinct providers by weight, send to the one with
    fewer requests in flight (the first drawn on a tie). Steers away from a slow provider,
    whose calls pile up, without measuring latency."""

    def __init__(self) -> None:
        self._weighted = WeightedRandom()

    def pick(self, choices: Sequence[Choice], rng: Random) -> Choice | None:
        first = self._weighted.pick(choices, rng)
        if first is None:
            return None
        rest = [c for c in choices if c is not first]
        second = self._weighted.pick(rest, rng)
        if second is None or first.in_flight <= second.in_flight:
            return first
        return second


_REGISTRY: dict[str, Callable[[], Balancer]] = {
    "weighted_random": WeightedRandom,
    "round_robin": RoundRobin,
    "power_of_two": PowerOfTwo,
}


def register(name: str, factory: Callable[[], Balancer]) -> None:
    """Make ``factory`` available to scenarios as ``gateway.balancer = name``."""
    if not name.isidentifier():
        raise ValueError(f"balancer name {name!r}: expected letters, digits and _")
    _REGISTRY[name] = factory


def names() -> tuple[str, ...]:
    """Every balancer a scenario may name."""
    return tuple(_REGISTRY)


def create(name: str) -> Balancer:
    """A fresh balancer of the named policy."""
    if name not in _REGISTRY:
        raise ValueError(f"balancer {name!r}: expected one of {', '.join(names())}")
    return _REGISTRY[name]()
