"""Check for ``06_load_testing``: Little's law.

:func:`check_in_flight`: the mean number of requests in flight during :data:`LITTLE_RUN`,
predicted from its summary (Little's law: L = λ × W), must be within 1% of the time average
the simulator measured in its own virtual-time run.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from gwlab.exercises import Verdict
from gwlab.sim import SimResult, simulate

LITTLE_RUN: Mapping[str, Any] = {
    "scenario": {"workload": {"mode": "open", "rate": 500.0}},
    "duration": 60.0,
    "seed": 1,
}
"""The run of the Little's law exercise: the seed providers under open-loop traffic."""
LITTLE_TOLERANCE = 0.01
"""Relative error allowed on the predicted number in flight."""


def little_run() -> SimResult:
    """The simulation of :data:`LITTLE_RUN`."""
    return simulate(LITTLE_RUN["scenario"], duration=LITTLE_RUN["duration"], seed=LITTLE_RUN["seed"])


def mean_in_flight(result: SimResult) -> float:
    """The time average of the number of admitted requests in flight over the whole run."""
    return sum(b.in_flight_area for b in result.timeseries()) / result.duration


def check_in_flight(answer: float | None) -> Verdict:
    """Right when ``answer`` is within :data:`LITTLE_TOLERANCE` of the measured mean in flight."""
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or not math.isfinite(answer):
        return Verdict(False, "set answer to a number: arrival rate of admitted requests × their mean latency")
    measured = mean_in_flight(little_run())
    error = abs(answer - measured) / measured
    if error <= LITTLE_TOLERANCE:
        return Verdict(True, f"{answer:.1f} in flight predicted, {measured:.1f} measured: "
                             f"Little's law holds within {error:.2%}")
    return Verdict(False, f"{answer:.1f} is {error:.0%} off the measured mean in flight; use the run's "
                          "measured admitted rate and mean latency, not the configured weights")
