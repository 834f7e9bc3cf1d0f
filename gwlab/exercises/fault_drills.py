"""Checks for ``05_fault_drills``: a backoff that recovers fast but probes little.

:func:`check_backoff` runs its own virtual-time simulations, so it judges an answer by what
the gateway really does rather than against a stored number: a breaker ``base_delay`` and
``max_cooldown`` for which p1 is healthy again within :data:`RECOVERY_BOUND` seconds after
each of the outages of :func:`outage_scenario`, while p1's breaker opens at most once per
:data:`SECONDS_PER_PROBE` seconds of outage (each opening after the first few is a failed
probe: a call wasted on a provider that is down).
"""

from __future__ import annotations

from typing import Any, Mapping

from gwlab import config
from gwlab.config import ConfigError, Scenario
from gwlab.exercises import Verdict
from gwlab.sim import SimResult, simulate

OUTAGE_RATE = 300.0
"""Open-loop requests per second of the outage experiments."""
OUTAGE_START = 10.0
"""When p1's outage begins, in seconds."""
OUTAGE_LENGTHS = (30.0, 40.0, 50.0)
"""The outages (seconds) a backoff answer must handle: recovery must not depend on luck."""
OUTAGE_TAIL = 40.0
"""Seconds simulated after an outage ends."""
RECOVERY_BOUND = 5.0
"""Seconds after an outage's end by which p1 must be healthy again."""
SECONDS_PER_PROBE = 3.0
"""At most one opening of p1's breaker per this many seconds of outage."""
SEED = 1


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


def check_backoff(answer: Mapping[str, Any] | None) -> Verdict:
    """Right when the breaker settings in ``answer`` recover p1 within :data:`RECOVERY_BOUND`
    after every outage of :data:`OUTAGE_LENGTHS` with few wasted probes."""
    if not isinstance(answer, Mapping) or set(answer) - {"base_delay", "max_cooldown"} or not answer:
        return Verdict(False, 'set answer to a dict such as {"base_delay": 1.0, "max_cooldown": 30.0}')
    problems, hints = [], []
    for length in OUTAGE_LENGTHS:
        try:
            scenario = outage_scenario(length, answer)
        except ConfigError as exc:
            return Verdict(False, str(exc))
        end = OUTAGE_START + length
        result = simulate(scenario, duration=end + OUTAGE_TAIL, seed=SEED)
        recovery = recovery_time(result, "p1", end)
        opened = sum(1 for t in result.transitions if t.provider == "p1" and t.target == "open")
        allowed = int(length // SECONDS_PER_PROBE)
        if recovery is None or recovery > RECOVERY_BOUND:
            shown = "never" if recovery is None else f"after {recovery:.1f} s"
            problems.append(f"{length:g} s outage: p1 healthy {shown} (want <= {RECOVERY_BOUND:g} s)")
            hints.append("a recovered p1 waits out the cooldown running when the outage ends")
        if opened > allowed:
            problems.append(f"{length:g} s outage: p1 opened {opened} times (want <= {allowed})")
            hints.append("every cooldown that ends during the outage costs a failed probe")
    if problems:
        return Verdict(False, "; ".join(problems) + ". Hint: " + "; ".join(dict.fromkeys(hints)) + ".")
    return Verdict(True, f"p1 recovers within {RECOVERY_BOUND:g} s after each outage, "
                         f"with at most one failed probe per {SECONDS_PER_PROBE:g} s of outage")
