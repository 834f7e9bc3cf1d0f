"""Checks for ``03_circuit_breaker``: tune a breaker for a flaky provider.

The scenario: p1 carries most of the traffic and fails 10% of its calls at random all the
time (flaky, but worth using); from :data:`OUTAGE_START` to :data:`OUTAGE_END` it fails every
call (an outage). The learner chooses ``failure_threshold`` and ``base_delay``; the check runs
the scenario in virtual time with that breaker and asks two things of p1's breaker:

- while p1 is merely flaky (before the outage) it is open for at most
  :data:`MAX_OPEN_BY_CHANCE` seconds in all: chance runs of failures must not shut out a
  useful provider for long;
- once the outage is over, p1 is healthy again within :data:`MAX_RECOVERY` seconds.
"""

from __future__ import annotations

from typing import Any, Mapping

from gwlab import config
from gwlab.config import ConfigError
from gwlab.exercises import Verdict
from gwlab.sim import SimResult, simulate

OUTAGE_START = 20.0
OUTAGE_END = 30.0
DURATION = 40.0
"""Simulated seconds of the scenario."""
SEED = 1
MAX_OPEN_BY_CHANCE = 1.0
"""Seconds p1's breaker may be open in all before the outage."""
MAX_RECOVERY = 8.0
"""Seconds after the outage's end by which p1 must be healthy again."""
FLAKY = config.from_dict({
    "providers": {
        "p1": {"weight": 70, "latency": 0.1, "error_rate": 0.1},
        "p2": {"weight": 30, "latency": 0.5, "error_rate": 0.02},
    },
    "events": [
        {"at": OUTAGE_START, "providers": {"p1": {"outage": "error"}}},
        {"at": OUTAGE_END, "providers": {"p1": {"outage": "none"}}},
    ],
}, "the flaky scenario")
"""Two providers and 100 closed-loop clients; p1 flaky, with an outage."""
ANSWER_KEYS = ("failure_threshold", "base_delay")


def flaky_run(answer: Mapping[str, Any]) -> SimResult:
    """The flaky scenario with ``answer`` (breaker settings) in force, in virtual time.
    Raises :class:`~gwlab.config.ConfigError` for a bad setting."""
    return simulate(config.merge(FLAKY, {"breaker": dict(answer)}, "answer"), duration=DURATION, seed=SEED)


def score(result: SimResult) -> dict[str, float | None]:
    """``open_by_chance``: seconds p1's breaker was open or half-open before the outage;
    ``recovery``: seconds from the outage's end until p1 was healthy again (``None`` when it
    was not by the end of the run)."""
    opened: float | None = None
    open_by_chance = 0.0
    recovery = None
    for t in result.transitions:
        if t.provider != "p1":
            continue
        if t.time < OUTAGE_START:
            if t.target == "open" and opened is None:
                opened = t.time
            elif t.target == "healthy" and opened is not None:
                open_by_chance += t.time - opened
                opened = None
        elif t.target == "healthy" and t.time >= OUTAGE_END and recovery is None:
            recovery = t.time - OUTAGE_END
    if opened is not None:
        open_by_chance += OUTAGE_START - opened
    return {"open_by_chance": open_by_chance, "recovery": recovery}


def check_flaky_breaker(answer: Any) -> Verdict:
    """Does the breaker setting ``answer`` (a dict with ``failure_threshold`` and
    ``base_delay``) keep p1 in use while it is flaky and bring it back soon after its outage?"""
    if not isinstance(answer, Mapping) or set(answer) != set(ANSWER_KEYS):
        return Verdict(False, f"answer = {answer!r}: expected a dict with the keys failure_threshold and "
                              "base_delay (for example {'failure_threshold': 3, 'base_delay': 1.0})")
    try:
        result = flaky_run(answer)
    except ConfigError as exc:
        return Verdict(False, str(exc))
    s = score(result)
    setting = f"threshold {answer['failure_threshold']}, base delay {answer['base_delay']:g} s"
    if s["open_by_chance"] > MAX_OPEN_BY_CHANCE:
        trips = sum(1 for t in result.transitions
                    if t.provider == "p1" and t.target == "open" and t.time < OUTAGE_START)
        return Verdict(False, f"{setting}: before the outage p1's breaker opened {trips} times by chance and "
                              f"stayed open {s['open_by_chance']:.1f} s in all (allowed: {MAX_OPEN_BY_CHANCE:g} s). "
                              "A run of failures as long as the threshold happens by chance with probability "
                              "0.1 ** threshold per call; a false opening costs a cooldown.")
    if s["recovery"] is None or s["recovery"] > MAX_RECOVERY:
        late = ("it was still not healthy when the run ended" if s["recovery"] is None
                else f"it was healthy again only {s['recovery']:.1f} s after it")
        return Verdict(False, f"{setting}: no chance openings, but the outage ended at {OUTAGE_END:g} s and {late} "
                              f"(allowed: {MAX_RECOVERY:g} s). The cooldown running when the outage ends, or the "
                              "next one after a probe that fails by chance, doubles from the base delay: look at "
                              "the breaker's transitions with flaky_run(answer).transitions.")
    return Verdict(True, f"{setting}: open by chance {s['open_by_chance']:.1f} s before the outage, healthy again "
                         f"{s['recovery']:.1f} s after it.")
