"""Checks for ``09_retries_and_metastability``: how retries multiply work, and how many a
system can afford before a short trigger leaves it collapsed.

:func:`check_amplification`: the provider calls one user request makes on average when
every call fails independently with probability ``p``, its client tries it up to
:data:`CLIENT_ATTEMPTS` times and the gateway tries each of those up to
:data:`GATEWAY_ATTEMPTS` times (:func:`calls_per_user_request`): the answer is a function of
``p``, right within :data:`AMPLIFICATION_TOLERANCE` of the formula at each of
:data:`AMPLIFICATION_PROBABILITIES`. As a second opinion the check measures the same number
in virtual time (:func:`amplification_scenario`, :data:`AMPLIFICATION_SEEDS`, about 30,000
user requests each) and shows it beside the formula: at p = 0.5 a user request's calls
vary with a standard deviation under 2, so the mean of 30,000 has a standard error under
0.012, 0.6% of the formula's 1.996, and the runs agree with it to within 1% (a run loses a
few requests to its end, which makes p = 1 read 8.99). The characteristic wrong answers
miss by far more: the layers' attempts added (6 at p = 1) instead of multiplied, one layer
only (3), and the geometric series without its cap (1 / (1 − p), infinite at p = 1).

:func:`check_retries`: the most client retries (``workload.retries``) with which the retry
storm of ``scenarios/retry_storm.toml`` does not persist, judged by DESIGN's definitions
(:func:`gwlab.metastability.recovery`) on each of :data:`STORM_SEEDS`: the answer must
recover on every seed and one retry more must persist on every seed. Why that is the idea's
verdict and not the seeds' luck: once the queue is full and every attempt times out, each
user request makes retries + 1 attempts, 40 × (retries + 1) a second against the model's
100. With one retry that is 80, 20% under the capacity, and the queue drains; with two it is
120, 20% over, and it never does. The margin is the same on any seed:
``tests/test_exercises_retries.py`` checks five more.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from gwlab import config
from gwlab.exercises import Verdict, call, known_mistake, shown, whole, wrong_kind
from gwlab.metastability import recovery
from gwlab.sim import simulate

# -- exercise 1: amplification -------------------------------------------------------------

CLIENT_ATTEMPTS = 3
"""Attempts of a user request by its client (2 retries: the ``openai`` SDK's default)."""
GATEWAY_ATTEMPTS = 3
"""Attempts of each client attempt by the gateway (``retry.attempts``)."""
AMPLIFICATION_PROBABILITIES = (0.0, 0.1, 0.5, 0.9, 1.0)
"""The failure probabilities at which an answer is compared with the formula."""
AMPLIFICATION_TOLERANCE = 0.005
"""Relative error allowed at each probability."""
AMPLIFICATION_SEEDS = (1, 2)
AMPLIFICATION_RATE, AMPLIFICATION_DURATION = 50.0, 600.0
"""User requests a second and simulated seconds of each run of the second opinion."""


def calls_per_user_request(p: float, client_attempts: int = CLIENT_ATTEMPTS,
                           gateway_attempts: int = GATEWAY_ATTEMPTS) -> float:
    """The mean provider calls of a user request when each call fails with probability
    ``p`` (0 <= p <= 1), independently: the gateway's attempts at one client attempt are a
    capped geometric series, (1 − p^g) / (1 − p), and a client attempt fails only when all
    of them do, with probability p^g, so the client's attempts are the same series in p^g."""
    def attempts(q: float, n: int) -> float:
        return float(n) if q == 1 else (1 - q**n) / (1 - q)

    return attempts(p, gateway_attempts) * attempts(p**gateway_attempts, client_attempts)


def amplification_scenario(p: float) -> dict[str, Any]:
    """One provider failing each call with probability ``p`` after 50 ms, no breaker, a
    gateway retrying every 502 up to :data:`GATEWAY_ATTEMPTS` times with no budget to speak
    of, and open-loop clients retrying each failed user request up to
    :data:`CLIENT_ATTEMPTS` times."""
    return {"breaker": {"enabled": False},
            "providers": {"p1": {"weight": 1.0, "latency": 0.05, "error_rate": p}, "p2": {"weight": 0.0},
                          "p3": {"weight": 0.0}},
            "workload": {"mode": "open", "rate": AMPLIFICATION_RATE, "retry_policy": "fixed",
                         "retries": CLIENT_ATTEMPTS - 1, "retry_delay": 0.1},
            "retry": {"attempts": GATEWAY_ATTEMPTS, "retry_on": [502], "budget_ratio": 1000.0}}


def measured_calls(p: float, seed: int) -> float:
    """Provider calls per user request in a run of :func:`amplification_scenario`: the
    gateway's requests (each client attempt) and its retries, over the user requests."""
    summary = simulate(amplification_scenario(p), AMPLIFICATION_DURATION, seed).summary()
    return (summary["offered"] + summary.get("retries", {}).get("retry", 0)) / summary["user_requests"]["offered"]


def check_amplification(answer: Callable[[float], float] | None) -> Verdict:
    """Right when ``answer(p)`` gives :func:`calls_per_user_request` at every probability
    of :data:`AMPLIFICATION_PROBABILITIES`, within :data:`AMPLIFICATION_TOLERANCE`."""
    if not callable(answer):
        return Verdict(False, f"answer = {shown(answer)}: expected a function of p, the probability that a call fails "
                              "(for example def answer(p): return 1 + p)")
    for p in AMPLIFICATION_PROBABILITIES:
        want = calls_per_user_request(p)
        got = call(answer, p)
        if isinstance(got, str):
            return Verdict(False, f"answer({p:g}) {got}" + ("; at p = 1 every call fails, and a layer stops after "
                                                            "its last attempt" if p == 1 else ""))
        if not math.isfinite(got) or abs(got - want) > AMPLIFICATION_TOLERANCE * want:
            mistakes = [(1 / (1 - p), "that is the series without its cap: each layer stops after its last attempt")] \
                if p < 1 else [(float(GATEWAY_ATTEMPTS + CLIENT_ATTEMPTS), "that adds the two layers' attempts: the "
                                "gateway tries each of the client's attempts, so they multiply"),
                               (float(GATEWAY_ATTEMPTS), "that counts one layer only: the client retries what the "
                                "gateway gave up on")]
            why = known_mistake(got, mistakes, 0.01 * want)
            return Verdict(False, f"at p = {p:g} your function gives {got:.4g} calls per user request, the formula "
                                  f"{want:.4g}" + (f": {why}" if why else ""))
    measured = {p: [measured_calls(p, seed) for seed in AMPLIFICATION_SEEDS] for p in (0.5, 1.0)}
    seen = "; ".join(f"p = {p:g}: {calls_per_user_request(p):.3f}, simulated "
                     + ", ".join(f"{m:.3f}" for m in runs) for p, runs in measured.items())
    return Verdict(True, f"right at every p ({seen}). A failing system gets "
                         f"{GATEWAY_ATTEMPTS} × {CLIENT_ATTEMPTS} = {GATEWAY_ATTEMPTS * CLIENT_ATTEMPTS} calls for every "
                         "user request: the layers multiply")


# -- exercise 2: how many retries a system can afford ------------------------------------

STORM = Path(__file__).resolve().parent.parent.parent / "scenarios" / "retry_storm.toml"
STORM_SEEDS = (1, 2, 3)
TRIGGER = (60.0, 90.0)
"""The storm's trigger, from its first event to its second (seconds)."""
STORM_DURATION = TRIGGER[1] + config.PERSISTS_FOR * (TRIGGER[1] - TRIGGER[0])
MAX_RETRIES = config.MAX_ATTEMPTS - 1


def storm_persists(retries: int, seed: int) -> bool:
    """Whether the storm persists with ``retries`` client retries, on ``seed``."""
    scenario = config.merge(config.load(STORM), {"workload": {"retries": retries}})
    return recovery(simulate(scenario, STORM_DURATION, seed).timeseries(), *TRIGGER).persists


def check_retries(answer: int | None) -> Verdict:
    """Right when the storm does not persist with ``answer`` client retries on any of
    :data:`STORM_SEEDS`, and persists on each with one more."""
    count = whole(answer)
    if count is None or not 0 <= count < MAX_RETRIES:
        return wrong_kind(answer, f"a whole number of retries from 0 to {MAX_RETRIES - 1} (for example answer = 4)")
    answer = count
    rate, capacity = 40, 100
    if any(storm_persists(answer, seed) for seed in STORM_SEEDS):
        return Verdict(False, f"with {answer} retries the storm persists: once every attempt times out, each user "
                              f"request makes {answer + 1}, {rate * (answer + 1)} a second against the model's "
                              f"{capacity}, and the queue never drains")
    if not all(storm_persists(answer + 1, seed) for seed in STORM_SEEDS):
        return Verdict(False, f"{answer} retries let the system recover, and so do {answer + 1}: look for the most")
    return Verdict(True, f"{answer} {'retry' if answer == 1 else 'retries'}: {rate * (answer + 1)} attempts a second at worst, under the model's "
                         f"{capacity}, and it recovers on every seed; with {answer + 1}, {rate * (answer + 2)} a second "
                         "keep the queue full for good. A retry is affordable only while a failing system can serve "
                         "every attempt it brings")
