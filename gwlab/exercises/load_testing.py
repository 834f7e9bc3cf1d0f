"""Check for ``06_load_testing``: Little's law.

:func:`check_in_flight`: the mean number of requests in flight during :data:`LITTLE_RUN`,
predicted from its summary (Little's law: L = λ × W), must be within :data:`LITTLE_TOLERANCE`
of the time average the simulator measured in its own virtual-time run.

Why the tolerance passes the law and nothing else. Over a run of T seconds, λ × W counts the
answered requests only, while the measured L also holds the time of those still in flight
when the run ends. A request in flight at a random moment has been so for E[W²] / (2 E[W]) on
average (the length-biased residual of renewal theory), so the law's prediction falls short
by about E[W²] / (2 E[W] T) ≤ max W / (2 T): for latencies of at most 2 s over 60 s, 1/60,
under the tolerance. The characteristic wrong answers (:func:`_mistakes`) miss for reasons
that do not shrink with a longer run or another seed: the median instead of the mean (the
slow providers' calls pull the mean far above it), the rate of successes only (the failed
calls are in flight too), the configured weights (the breakers move traffic off the flaky,
slow providers).
"""

from __future__ import annotations

from typing import Any, Mapping

from gwlab.config import SEED_PROVIDERS
from gwlab.exercises import Verdict, direction, known_mistake, number, off_by, wrong_kind
from gwlab.sim import SimResult, simulate

LITTLE_RUN: Mapping[str, Any] = {
    "scenario": {"workload": {"mode": "open", "rate": 500.0}},
    "duration": 60.0,
    "seed": 1,
}
"""The run of the Little's law exercise: the seed providers under open-loop traffic."""
LITTLE_TOLERANCE = 0.02
"""Relative error allowed on the predicted number in flight."""


def little_run() -> SimResult:
    """The simulation of :data:`LITTLE_RUN`."""
    return simulate(LITTLE_RUN["scenario"], duration=LITTLE_RUN["duration"], seed=LITTLE_RUN["seed"])


def mean_in_flight(result: SimResult) -> float:
    """The time average of the number of admitted requests in flight over the whole run."""
    return sum(b.in_flight_area for b in result.timeseries()) / result.duration


def _mistakes(summary: Mapping[str, Any]) -> list[tuple[float, str]]:
    """Characteristic wrong predictions from the run's ``summary``, each with what it got wrong."""
    rate, latency = summary["rates"]["admitted"], summary["latency"]
    configured = sum(w * lat for _, w, lat, _ in SEED_PROVIDERS) / sum(w for _, w, _, _ in SEED_PROVIDERS)
    return [
        (rate * latency["p50"], "that uses the median latency (p50): Little's law needs the mean time in the "
                                "system, and the slow providers' calls pull the mean far above the median"),
        *[(rate * latency[q], "that uses a tail quantile (p95 or p99): Little's law needs the mean latency")
          for q in ("p95", "p99")],
        (summary["rates"]["ok"] * latency["mean"], "that counts the successful requests only: the failed ones "
                                                   "are in flight too, so use the admitted rate"),
        (LITTLE_RUN["scenario"]["workload"]["rate"] * configured,
         "that comes from the configured weights and latencies: the breakers move traffic off the flaky, slow "
         "providers, so use the run's measured admitted rate and mean latency"),
        (rate / latency["mean"], "that divides the rate by the latency: L = λ × W"),
        (rate * latency["mean"] * 1000, "that takes the latency in milliseconds: use seconds"),
    ]


def check_in_flight(answer: float | None) -> Verdict:
    """Right when ``answer`` is within :data:`LITTLE_TOLERANCE` of the measured mean in flight."""
    predicted = number(answer)
    if predicted is None:
        return wrong_kind(answer, "a number: the arrival rate of admitted requests × their mean latency")
    answer = predicted
    result = little_run()
    measured = mean_in_flight(result)
    error = abs(answer - measured) / measured
    if error <= LITTLE_TOLERANCE:
        return Verdict(True, f"{answer:.5g} in flight predicted, {measured:.1f} measured: "
                             f"Little's law holds within {error:.2%}")
    hint = known_mistake(answer, _mistakes(result.summary()), LITTLE_TOLERANCE * abs(answer)) or (
        "multiply the run's admitted rate (requests per second) by their mean latency (seconds)")
    return Verdict(False, f"{answer:.5g} requests in flight is {direction(answer, measured)} by "
                          f"{off_by(answer, measured)} (the simulator measured {measured:.1f}): {hint}.")
