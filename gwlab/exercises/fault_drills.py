"""Checks for ``05_fault_drills``: a backoff that recovers fast but probes little.

:func:`check_backoff` runs its own virtual-time simulations, so it judges an answer by what
the gateway really does rather than against a stored number: a breaker ``base_delay`` and
``max_cooldown`` for which, after each outage of :func:`outage_scenario` listed in
:data:`OUTAGES`, p1 is healthy again within :data:`RECOVERY_BOUND` seconds, while its breaker
opens at most once per :data:`SECONDS_PER_PROBE` seconds of outage (each opening after the
first is a failed probe: a call wasted on a provider that is down).

Why the verdict is the idea's and not the luck of the outages' timing. p1 has no errors of
its own here, so every probe after an outage succeeds, and p1 waits after an outage for what
is left of the cooldown running when it ended: at most ``max_cooldown``, plus a probe's
latency (p1's 0.1 s) and the gap to the next arrival. A cap shorter than
:data:`RECOVERY_BOUND` by that much passes every outage, of any length, on any seed (a
fallback call can only end a cooldown early). A longer cap c fails an outage that ends in the first
(c − :data:`RECOVERY_BOUND`) / c or so of a cooldown: the lengths of :data:`OUTAGES` step by
the golden ratio's fraction of :data:`OUTAGE_SPREAD`, so their ends fall at phases spread
over any cooldown cycle up to the spread, and a cap well above the bound meets such an
outage among them. A cap just above it is met at its worst by one more drill: the longest
outage's seed again, the outage now ending :data:`WORST_END` after p1's breaker last opened
within it (the run is the same up to then: an event changes nothing before its time), so
that p1 waits out a whole cooldown of the cap, then a probe. Openings: one per cooldown that ends during the outage, about
``length / max_cooldown`` once the cooldowns have doubled up to the cap, plus one per
fallback call p1 takes while down, which needs the other two breakers open at once, rare at
their error rates; each outage runs on its own seed, so such calls are counted where they
happen rather than assumed away.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from gwlab import config
from gwlab.config import ConfigError, Scenario
from gwlab.exercises import Verdict, number, wrong_kind
from gwlab.sim import SimResult, simulate

OUTAGE_RATE = 300.0
"""Open-loop requests per second of the outage experiments."""
OUTAGE_START = 10.0
"""When p1's outage begins, in seconds."""
SHORTEST_OUTAGE = 30.0
"""The shortest outage (seconds) the check runs."""
OUTAGE_SPREAD = 20.0
"""How much longer than :data:`SHORTEST_OUTAGE` the check's outages go (seconds)."""
OUTAGE_COUNT = 8
"""How many outages the check runs, each on its own seed."""
OUTAGES = tuple((seed, round(SHORTEST_OUTAGE + OUTAGE_SPREAD * (i * (math.sqrt(5) - 1) / 2 % 1), 1))
                for i, seed in enumerate(range(1, OUTAGE_COUNT + 1)))
"""``(seed, length in seconds)`` of the outages a backoff answer must handle: the lengths step
by the golden ratio's fraction of the spread, so that the outages end at moments spread over
the cooldowns, and recovery must not depend on luck."""
WORST_END = 0.001
"""Seconds after p1's breaker opens at which the check's last outage ends: the worst moment,
when the whole cooldown is still to run."""
OUTAGE_TAIL = 15.0
"""Seconds simulated after an outage ends."""
RECOVERY_BOUND = 5.0
"""Seconds after an outage's end by which p1 must be healthy again."""
SECONDS_PER_PROBE = 3.0
"""At most one opening of p1's breaker per this many seconds of outage."""


def outage_scenario(length: float, breaker: Mapping[str, Any] | None = None) -> Scenario:
    """Open-loop traffic at :data:`OUTAGE_RATE`/s; p1 never fails except during its outage,
    every call from :data:`OUTAGE_START` for ``length`` seconds; ``breaker`` overrides
    breaker settings. (Without p1's own 5% errors, a probe after the outage cannot fail by
    chance, and every change of p1's breaker is the outage's doing.)"""
    data: dict[str, Any] = {
        "providers": {name: {"weight": w, "latency": lat, "error_rate": 0.0 if name == "p1" else e}
                      for name, w, lat, e in config.SEED_PROVIDERS},
        "workload": {"mode": "open", "rate": OUTAGE_RATE},
        "events": [
            {"at": OUTAGE_START, "providers": {"p1": {"outage": "error"}}},
            {"at": OUTAGE_START + length, "providers": {"p1": {"outage": "none"}}},
        ],
    }
    if breaker:
        data["breaker"] = dict(breaker)
    return config.from_dict(data, "outage scenario")


def recovery_time(result: SimResult, provider: str, since: float) -> float | None:
    """Seconds from ``since`` (an outage's end) until ``provider``'s breaker is next healthy;
    ``None`` if it never is before the run ends."""
    for t in result.transitions:
        if t.provider == provider and t.target == "healthy" and t.time >= since:
            return t.time - since
    return None


def _drill(seed: int, length: float, answer: Mapping[str, Any]) -> tuple[float | None, list[float]]:
    """p1's recovery time for one outage of ``length`` seconds, and when its breaker opened."""
    end = OUTAGE_START + length
    result = simulate(outage_scenario(length, answer), duration=end + OUTAGE_TAIL, seed=seed)
    return recovery_time(result, "p1", end), [t.time for t in result.transitions
                                              if t.provider == "p1" and t.target == "open"]


def check_backoff(answer: Mapping[str, Any] | None) -> Verdict:
    """Right when the breaker settings in ``answer`` recover p1 within :data:`RECOVERY_BOUND`
    after every outage of :data:`OUTAGES` with few wasted probes. A ``base_delay`` alone above
    the default ``max_cooldown`` is told to set ``max_cooldown`` too, which it left out."""
    if not isinstance(answer, Mapping) or set(answer) - {"base_delay", "max_cooldown"} or not answer:
        return wrong_kind(answer, 'a dict such as {"base_delay": 1.0, "max_cooldown": 30.0}')
    delay = number(answer.get("base_delay"))
    if "max_cooldown" not in answer and delay is not None and delay > config.MAX_COOLDOWN:
        return Verdict(False, f"base_delay {delay:g} s is longer than max_cooldown, whose default is "
                              f"{config.MAX_COOLDOWN:g} s: set max_cooldown too, at least the base delay")
    try:
        outage_scenario(SHORTEST_OUTAGE, answer)
    except ConfigError as exc:
        return Verdict(False, str(exc))
    late, wasteful = [], []
    longest = max(OUTAGES, key=lambda drill: drill[1])
    drills = [(seed, length, f"the {length:g} s outage of seed {seed}", True) for seed, length in OUTAGES]
    while drills:
        seed, length, outage, probes_judged = drills.pop(0)
        recovery, openings = _drill(seed, length, answer)
        if (seed, length) == longest and openings:
            # The same outage again, ending at its worst moment. It judges the recovery
            # alone: cut just after an opening, it has had more than its length's share.
            worst = round(openings[-1] - OUTAGE_START + WORST_END, 6)
            drills.append((seed, worst, f"the {worst:.3f} s outage of seed {seed}, which ends {WORST_END * 1000:g} ms "
                                        "after p1's breaker opened,", False))
        if recovery is None:
            late.append((math.inf, f"after {outage} p1 was still out {OUTAGE_TAIL:g} s later, too late by more than "
                                   f"{OUTAGE_TAIL - RECOVERY_BOUND:g} s"))
        elif recovery > RECOVERY_BOUND:
            late.append((recovery, f"after {outage} p1 was healthy again {recovery:.2f} s later, too late by "
                                   f"{recovery - RECOVERY_BOUND:.2g} s"))
        allowed = int(length // SECONDS_PER_PROBE)
        if probes_judged and len(openings) > allowed:
            wasteful.append((len(openings) - allowed, f"in {outage} p1's breaker opened {len(openings)} times, "
                                                      f"{len(openings) - allowed} too many (allowed: {allowed})"))
    count = len(OUTAGES) + 1
    problems = []
    if late:
        problems.append(f"recovery too slow after {len(late)} of the {count} outages (allowed: "
                        f"{RECOVERY_BOUND:g} s); the worst: {max(late)[1]}. A recovered p1 waits out the cooldown "
                        "running when the outage ends, and the longest cooldown is max_cooldown.")
    if wasteful:
        problems.append(f"too many failed probes in {len(wasteful)} of the {len(OUTAGES)} outages (allowed: one "
                        f"opening per {SECONDS_PER_PROBE:g} s of outage); the worst: {max(wasteful)[1]}. Every "
                        "cooldown that ends during the outage costs a failed probe, so short cooldowns waste more.")
    if problems:
        return Verdict(False, " ".join(problems))
    lengths = sorted(length for _, length in OUTAGES)
    return Verdict(True, f"after each of {len(OUTAGES)} outages of {lengths[0]:g} to {lengths[-1]:g} s, and one "
                         f"that ends just after p1's breaker opened, p1 recovers within {RECOVERY_BOUND:g} s, with at "
                         f"most one opening per {SECONDS_PER_PROBE:g} s of outage")
