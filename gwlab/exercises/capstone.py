"""Check for ``07_capstone``: a gateway configuration that meets an SLO through a brownout.

The world is fixed (:data:`WORLD`): three providers, open-loop traffic, and a brownout of p1,
the fast main provider, from :data:`BROWNOUT_START` to :data:`BROWNOUT_END`, during which its
calls turn slow and uneven and almost a third of them fail. The learner may change only what a
gateway operator controls: the balancer and the timeout (``gateway``), the breaker settings
(``breaker``) and the providers' weights. :func:`check_slo` runs the world with that patch
in virtual time on each of :data:`SEEDS` and asks for the SLO on every one of them, so a
configuration that passes by luck on one seed does not count:

- availability (200 / admitted) at least :data:`AVAILABILITY`,
- p99 latency of admitted requests below :data:`P99` seconds,
- median latency at most :data:`P50` seconds: the fast provider still answers most requests.
"""

from __future__ import annotations

from typing import Any, Mapping

from gwlab import config
from gwlab.config import Scenario
from gwlab.exercises import Verdict
from gwlab.sim import simulate

BROWNOUT_START = 30.0
BROWNOUT_END = 70.0
DURATION = 120.0
"""Simulated seconds of each scoring run."""
SEEDS = (1, 2, 3)
AVAILABILITY = 0.99
P99 = 1.0
P50 = 0.2
_BROWNOUT = {"error_rate": 0.3, "distribution": "lognormal", "latency": 0.3, "p99": 5.0}
WORLD: Mapping[str, Any] = {
    "providers": {
        "p1": {"weight": 70.0, "latency": 0.1, "error_rate": 0.002},
        "p2": {"weight": 20.0, "latency": 0.4, "error_rate": 0.005},
        "p3": {"weight": 10.0, "latency": 1.5, "error_rate": 0.001},
    },
    "workload": {"mode": "open", "rate": 200.0},
    "events": [
        {"at": BROWNOUT_START, "providers": {"p1": dict(_BROWNOUT)}},
        {"at": BROWNOUT_END, "providers": {"p1": {"latency": 0.1, "error_rate": 0.002, "distribution": "fixed",
                                                  "p99": 0.0}}},
    ],
}
"""The capstone's scenario: what the gateway faces, in the TOML shape."""
_ALLOWED = {"gateway": {"balancer", "timeout"},
            "breaker": {"enabled", "failure_threshold", "base_delay", "max_cooldown", "half_open_max_calls"}}


def scenario(patch: Mapping[str, Any] | None = None) -> Scenario:
    """:data:`WORLD` with ``patch`` (the learner's configuration) merged in.
    Raises :class:`ValueError` naming a key outside the gateway operator's control, and
    :class:`~gwlab.config.ConfigError` for a bad value."""
    patch = dict(patch or {})
    for section, fields in patch.items():
        if section == "providers" and isinstance(fields, Mapping):
            for name, values in fields.items():
                extra = set(values) - {"weight"} if isinstance(values, Mapping) else {"(not a table)"}
                if extra:
                    raise ValueError(f"providers.{name}: only weight is yours to set, not {', '.join(sorted(extra))}")
        elif section in _ALLOWED and isinstance(fields, Mapping):
            extra = set(fields) - _ALLOWED[section]
            if extra:
                raise ValueError(f"{section}: {', '.join(sorted(extra))} is not part of this exercise")
        else:
            raise ValueError(f"{section!r} is not yours to set: use gateway, breaker and providers.NAME.weight")
    return config.merge(config.from_dict(WORLD, "capstone world"), patch, "your configuration")


def score(patch: Mapping[str, Any] | None = None, seed: int = SEEDS[0]) -> dict[str, float]:
    """Availability, p50 and p99 latency (seconds) and breaker openings of one scoring run."""
    s = simulate(scenario(patch), duration=DURATION, seed=seed).summary()
    return {"availability": s["availability"], "p50": s["latency"]["p50"], "p99": s["latency"]["p99"],
            "trips": s["trips"]}


def _misses(result: Mapping[str, float]) -> list[str]:
    out = []
    if result["availability"] < AVAILABILITY:
        out.append(f"availability {result['availability']:.2%} < {AVAILABILITY:.0%}")
    if result["p99"] >= P99:
        out.append(f"p99 {result['p99']:.3f} s >= {P99:g} s")
    if result["p50"] > P50:
        out.append(f"p50 {result['p50']:.3f} s > {P50:g} s")
    return out


def check_slo(answer: Mapping[str, Any] | None) -> Verdict:
    """Right when ``answer`` (a patch of gateway, breaker and weights) meets the SLO on every
    seed of :data:`SEEDS`."""
    if not isinstance(answer, Mapping):
        return Verdict(False, 'set answer to a patch such as {"breaker": {"failure_threshold": 3}, '
                              '"providers": {"p3": {"weight": 10}}}')
    try:
        results = {seed: score(answer, seed) for seed in SEEDS}
    except ValueError as exc:  # ConfigError included
        return Verdict(False, str(exc))
    misses = {seed: _misses(r) for seed, r in results.items()}
    failed = [f"seed {seed}: {', '.join(m)}" for seed, m in misses.items() if m]
    if failed:
        return Verdict(False, "; ".join(failed))
    worst = min(r["availability"] for r in results.values())
    slowest = max(r["p99"] for r in results.values())
    return Verdict(True, f"SLO met on seeds {', '.join(map(str, SEEDS))}: availability >= {worst:.2%}, "
                         f"p99 <= {slowest:.3f} s")
