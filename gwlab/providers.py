"""Simulated LLM providers: how long a call takes and whether it fails.

A :class:`Provider` turns its configuration and two private random streams (one for
latency, one for errors) into a :class:`Call`: a duration and an outcome. Shells carry the
call out: the server sleeps for the duration, the simulator schedules an event after it.

Every call draws exactly one number from each stream, whatever the distribution, error
rate or outage, and draws latency by inverting the distribution's CDF. So the n-th call to a
provider always sees the same two numbers for a given seed: changing one provider's
parameters, or any other provider's, leaves every draw of this one unchanged (common random
numbers), and a sweep over a parameter shows its effect rather than noise.
"""

from __future__ import annotations

import enum
import math
from random import Random
from statistics import NormalDist
from typing import NamedTuple

from gwlab.config import ProviderConfig

_STANDARD_NORMAL = NormalDist()
_Z99 = _STANDARD_NORMAL.inv_cdf(0.99)
_TINY = 1e-300


class Outcome(enum.Enum):
    """How a provider call ended: ``status`` is what the gateway answers with, ``ok`` whether
    the breaker counts a success. (Plain attributes of each member, as they are read on
    every request.)"""

    SUCCESS = "success", 200
    ERROR = "error", 502
    TIMEOUT = "timeout", 504

    def __new__(cls, value: str, status: int) -> Outcome:
        member = object.__new__(cls)
        member._value_ = value
        member.status = status
        member.ok = value == "success"
        return member

    status: int
    ok: bool


_SUCCESS, _ERROR, _TIMEOUT = Outcome.SUCCESS, Outcome.ERROR, Outcome.TIMEOUT


class Call(NamedTuple):
    """A provider call decided in advance: it ends after ``duration`` seconds with ``outcome``.
    (A named tuple: immutable, and cheaper to create than a frozen dataclass.)"""

    duration: float
    outcome: Outcome


def latency_quantile(config: ProviderConfig, u: float) -> float:
    """The latency at quantile ``u`` (0 <= u < 1) of the provider's distribution. Finite for
    every ``u`` that ``random()`` returns: validation keeps latencies within a year and a
    log-normal's p99 within :data:`~gwlab.config.MAX_P99_RATIO` times its median."""
    if config.distribution == "fixed":
        return config.latency
    if config.distribution == "exponential":
        return -config.latency * math.log1p(-u)
    sigma = math.log(config.p99 / config.latency) / _Z99
    return config.latency * math.exp(sigma * _STANDARD_NORMAL.inv_cdf(max(u, _TINY)))


def mean_latency(config: ProviderConfig) -> float:
    """The distribution's mean, before the timeout cuts it off."""
    if config.distribution == "lognormal":
        sigma = math.log(config.p99 / config.latency) / _Z99
        return config.latency * math.exp(sigma * sigma / 2)
    return config.latency


class Provider:
    """One simulated provider with its own random streams."""

    def __init__(self, config: ProviderConfig, latency_rng: Random, error_rng: Random) -> None:
        self.config = config
        self._latency_rng = latency_rng
        self._error_rng = error_rng

    @property
    def name(self) -> str:
        return self.config.name

    def call(self, timeout: float) -> Call:
        """Decide the next call: an outage ``"hang"`` or a latency beyond ``timeout`` ends in
        a TIMEOUT after ``timeout`` seconds; otherwise an ERROR (outage ``"error"``, or with
        probability ``error_rate``) or a SUCCESS after the drawn latency."""
        config = self.config
        latency = latency_quantile(config, self._latency_rng.random())
        failed = self._error_rng.random() < config.error_rate
        outage = config.outage
        if outage == "hang" or latency > timeout:
            return Call(timeout, _TIMEOUT)
        if failed or outage == "error":
            return Call(latency, _ERROR)
        return Call(latency, _SUCCESS)
