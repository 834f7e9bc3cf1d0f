"""The simulator's books, whatever the scenario: hypothesis draws scenarios across every part
of the model at once (providers with and without token timing, length models, capacity,
their own rate limits and outages; the limiter with and without a tokens limit; breakers,
fallback policies, gateway retries, client retries, timeouts and adaptive throttling; open
and closed loops, replicas, scripted events) and checks what must hold of any run:

- every request sent ends exactly once, as one status, and is counted once in the summary
  (its provider's requests and its output tokens too);
- no request ends before it was sent or after the run, no latency or time to first token is
  negative or longer than the request took, no answer outgrows its cap;
- the gateway's timeout bounds a whole answer, and a stream's first token;
- a provider never runs more calls than its capacity nor queues more than its queue, nor is
  called while its breaker is open (unless forced, as a fallback);
- the requests the limiter admitted fit its token bucket, and the calls a provider took its own;
- the same run twice is the same run, a run paused anywhere ends as the run made at once,
  and an open-ended run (the virtual lab's) counts, up to any time, as a run that ends later.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gwlab import config, sim, stats, timeline
from gwlab.config import ConfigError
from gwlab.timeseries import TimeSeries
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(4 * SIMULATION_TIMEOUT)  # each test makes hundreds of short runs

DURATION = 40.0
EXAMPLES = 150


def _seconds(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def _providers(draw: st.DrawFn) -> dict:
    out = {}
    for i in range(draw(st.integers(1, 3))):
        p = {"weight": draw(st.sampled_from([0.0, 1.0, 3.0] if i else [1.0, 2.0])),
             "latency": draw(_seconds(0.001, 3)),
             "distribution": draw(st.sampled_from(list(config.DISTRIBUTIONS))),
             "error_rate": draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
             "outage": draw(st.sampled_from(["none", *config.OUTAGES]))}  # none half the time
        if p["distribution"] == "lognormal":
            p["p99"] = p["latency"] * draw(_seconds(1.01, 20))
        if draw(st.booleans()):  # token timing
            p["ttft"] = draw(_seconds(0.001, 2))
            p["decode_rate"] = draw(_seconds(1, 200))
        if draw(st.booleans()):  # a length model, and mid-stream errors
            p["output_tokens"] = float(draw(st.integers(1, 3000)))
            p["stream_error_rate"] = draw(st.sampled_from([0.0, 0.05, 1.0]))
        if draw(st.booleans()):
            p["capacity"] = draw(st.integers(1, 10))
            p["queue"] = draw(st.integers(0, 10))
        if draw(st.booleans()):  # the provider's own limits
            p["rpm"] = draw(st.sampled_from([0, 30, 600]))
            p["tpm"] = draw(st.sampled_from([0, 20_000, 100_000]))
        out[f"p{i}"] = p
    return out


_PATCHES = st.one_of(
    st.builds(lambda o: {"providers": {"p0": {"outage": o}}}, st.sampled_from(list(config.OUTAGES))),
    st.builds(lambda r: {"workload": {"rate": r}}, _seconds(0.5, 100)),
    st.builds(lambda m, c: {"workload": {"mode": m, "clients": c}}, st.sampled_from(list(config.MODES)),
              st.integers(1, 30)),
    st.builds(lambda c, q: {"providers": {"p0": {"capacity": c, "queue": q}}}, st.integers(0, 10), st.integers(0, 10)),
    st.builds(lambda r, t: {"limiter": {"rate": r, "tpm": t}}, _seconds(1, 200), st.sampled_from([0, 50_000])),
    st.builds(lambda w: {"providers": {"p0": {"weight": w}}}, st.sampled_from([0.0, 1.0, 5.0])),
    st.builds(lambda a: {"retry": {"attempts": a}}, st.integers(1, 3)),
    st.builds(lambda share, cap: {"workload": {"stream_share": share, "max_tokens": cap}},
              st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([0, 1, 100])),
    st.builds(lambda on: {"breaker": {"enabled": on}}, st.booleans()),
    st.builds(lambda p, n: {"workload": {"retry_policy": p, "retries": n}},
              st.sampled_from(list(config.CLIENT_RETRY_POLICIES)), st.integers(0, 3)),
    st.builds(lambda rpm: {"providers": {"p0": {"rpm": rpm}}}, st.sampled_from([0, 30, 600])),
)
"""Scripted changes of every kind a run can take mid-way."""


@st.composite
def _scenarios(draw: st.DrawFn) -> dict:
    return {
        "workload": {"mode": draw(st.sampled_from(list(config.MODES))), "rate": draw(_seconds(0.5, 100)),
                     "clients": draw(st.integers(1, 30)), "think_time": draw(_seconds(0, 2)),
                     "stream_share": draw(st.sampled_from([0.0, 0.5, 1.0])),
                     "max_tokens": draw(st.sampled_from([0, 1, 100, 4000])),
                     "retry_policy": draw(st.sampled_from(list(config.CLIENT_RETRY_POLICIES))),
                     "retries": draw(st.integers(0, 3)), "timeout": draw(st.sampled_from([0.0, 0.5, 5.0])),
                     "max_in_flight": draw(st.sampled_from([1, 5, 1000]))},
        "providers": draw(_providers()),
        "gateway": {"timeout": draw(_seconds(0.2, 10)), "fallback": draw(st.sampled_from(list(config.FALLBACKS))),
                    "stream_idle_timeout": draw(_seconds(0.05, 5))},
        "limiter": {"rate": draw(_seconds(1, 200)), "burst": draw(_seconds(1, 100)),
                    "tpm": draw(st.sampled_from([0, 50_000, 1_000_000])),
                    "backend": draw(st.sampled_from(list(config.LIMITER_BACKENDS)))},  # one bucket for every replica
        "breaker": {"enabled": draw(st.booleans()), "failure_threshold": draw(st.integers(1, 5)),
                    "base_delay": draw(_seconds(0.1, 5)), "half_open_max_calls": draw(st.integers(1, 3)),
                    "count_rate_limited": draw(st.booleans())},
        "retry": {"attempts": draw(st.integers(1, 3)), "deadline": draw(_seconds(0.5, 20))},
        "events": [{"at": draw(_seconds(0, DURATION)), **draw(_PATCHES)} for _ in range(draw(st.integers(0, 3)))],
    }


def _runnable(data: dict) -> config.Scenario:
    """The scenario of ``data``, or the example is dropped if the simulator refuses it (a
    closed loop that could stand still, requests no tokens limit admits)."""
    try:
        scenario = config.from_dict(data)
        sim.check_runnable(scenario)
    except ConfigError:
        assume(False)
    return scenario


def _same(a: sim.SimResult, b: sim.SimResult) -> bool:
    return a.requests == b.requests and a.to_json() == b.to_json()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=_scenarios(), replicas=st.integers(1, 3), seed=st.integers(0, 5))
def test_every_request_ends_once_within_the_bounds_of_its_scenario(data, replicas, seed):
    scenario = _runnable(data)
    result = sim.simulate(scenario, duration=DURATION, seed=seed, keep_requests=True, replicas=replicas)
    summary = result.summary()
    assert sum(summary["codes"].values()) == summary["offered"] == len(result.requests)
    assert summary["admitted"] <= summary["offered"]
    assert summary.get("output_tokens", {}).get("total", 0) == sum(r.tokens for r in result.requests)
    for name, counts in summary["providers"].items():
        assert counts["requests"] == sum(r.provider == name for r in result.requests)
    users = summary.get("user_requests")
    assert (users is not None) == timeline.follows_users(scenario)  # from the start, whatever event needs them
    if users is not None:
        # Each user request ends once, in one outcome; each of its attempts sent reached the
        # gateway and ended in one status; an answer after its client left is wasted, not
        # counted, and there is at most one for each attempt its client stopped waiting for.
        outcomes, codes = users["outcomes"], summary["codes"]
        assert min(outcomes.values()) >= 0 and sum(outcomes.values()) == users["offered"], users
        assert users["attempts"] == summary["offered"] and outcomes["ok"] == codes.get("200", 0), (users, codes)
        assert users.get("wasted", 0) <= codes.get("client_timeout", 0), (users, codes)

    still = not scenario.events  # the bounds below are those of the scenario throughout
    one_bucket = replicas == 1 or scenario.limiter.backend == "redis"
    caps = [scenario.workload.max_tokens] + [e.patch["workload"]["max_tokens"] for e in scenario.events
                                             if "max_tokens" in e.patch.get("workload", {})]
    cap = max(caps) if all(caps) else None  # every workload in force caps the answers
    one_attempt = scenario.retry.attempts == 1
    for r in result.requests:
        assert 0 <= r.sent <= r.done <= DURATION, r
        assert 0 <= r.latency <= r.done - r.sent + 1e-9, r
        assert r.tokens >= 0, r
        if r.ttft is not None:
            assert 0 <= r.ttft <= r.latency + 1e-9, r
        if cap is not None and r.status == 200:
            assert r.tokens <= cap, r
        if r.provider == stats.NO_PROVIDER:  # answered by the gateway or the client: no provider's tokens
            assert (r.tokens, r.ttft) == (0, None), r
            if r.status == stats.CLIENT_TIMEOUT:
                assert r.latency == r.done - r.sent == pytest.approx(scenario.workload.timeout), r
            elif one_attempt and still:
                assert r.latency == 0, r
        elif one_attempt and still:  # the gateway's timeout: a whole answer's, or a stream's first token
            assert (r.latency if r.ttft is None else r.ttft) <= scenario.gateway.timeout + 1e-9, r

    for b in result.timeseries().bins:
        assert b.in_flight_area >= 0, b
        if still:
            # The gauges are each bucket's, rounded to the nanotoken, summed over the buckets.
            assert b.burst == pytest.approx(scenario.limiter.burst * (1 if one_bucket else replicas), abs=1e-8)
            assert 0 <= b.tokens <= b.burst, b
            for p in scenario.providers:
                busy, waiting = b.slots.get(p.name, (0, 0))
                assert busy <= (p.capacity or busy) and waiting <= p.queue, (p.name, busy, waiting)

    if still and one_bucket and one_attempt and not (scenario.limiter.tpm or scenario.workload.timeout
                                                        or scenario.workload.retries):
        # Each request the limiter admitted took a token of its bucket, whose rate is kept to
        # a thousandth of a token a second and its burst to a nano-token (gwlab.limiter).
        _replay(sorted(r.sent for r in result.requests if not (r.provider == stats.NO_PROVIDER and r.status in (429, 400))),
                round(scenario.limiter.burst * 1e9) / 1e9, round(scenario.limiter.rate * 1000) / 1000)

    if still and one_attempt and replicas == 1 and scenario.gateway.fallback != "panic":
        # No call goes to a provider while its breaker is open, but one forced there when none
        # was eligible (a fallback): calls are routed as they are sent.
        opened: dict[str, float] = {}
        cooling: dict[str, list[tuple[float, float]]] = {p.name: [] for p in scenario.providers}
        for t in result.transitions:
            if t.target == "open":
                opened[t.provider] = t.time
            elif t.source == "open":
                cooling[t.provider].append((opened.pop(t.provider), t.time))
        for name, since in opened.items():
            cooling[name].append((since, DURATION))
        for r in result.requests:
            if r.provider != stats.NO_PROVIDER and not r.fallback:
                assert not any(start < r.sent < end for start, end in cooling[r.provider]), (r, cooling[r.provider])

    for p in scenario.providers if still and one_attempt else ():
        if p.rpm and not (p.capacity or p.tpm):
            # The provider's own limit: each call it took (any but its 429s) took a token of
            # its bucket, ``rpm`` of them refilled at ``rpm`` a minute.
            _replay(sorted(r.sent for r in result.requests if r.provider == p.name and r.status != 429),
                    p.rpm, p.rpm / 60)

    assert _same(sim.simulate(scenario, duration=DURATION, seed=seed, keep_requests=True, replicas=replicas), result)


def _replay(times: list[float], capacity: float, rate: float) -> None:
    """Each of ``times`` (seconds, in order) takes a token of an ideal bucket of ``capacity``
    tokens refilled at ``rate`` a second, full at 0: none finds it short by more than the
    limiter's one tolerance, a microsecond's refill (its clock counts whole microseconds;
    ``gwlab.limiter``)."""
    level, last = capacity, 0.0
    for at in times:
        level = min(capacity, level + (at - last) * rate) - 1
        last = at
        assert level >= -rate * 1e-6 - 1e-9, (at, level)


@settings(max_examples=EXAMPLES // 2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=_scenarios(), replicas=st.integers(1, 3), seed=st.integers(0, 5),
       pauses=st.lists(st.floats(0, DURATION, exclude_max=True), max_size=6))
def test_a_run_paused_anywhere_ends_as_the_run_made_at_once(data, replicas, seed, pauses):
    """The virtual lab runs the engine a slice at a time: where it pauses changes nothing."""
    scenario = _runnable(data)
    whole = sim.simulate(scenario, duration=DURATION, seed=seed, keep_requests=True, replicas=replicas)
    engine = sim._Engine(scenario, "scenario", seed, DURATION, config.BIN_WIDTH, True, None, replicas)
    for at in sorted(pauses):
        assert engine.advance(at) is None
    assert _same(engine.advance(DURATION), whole)


@settings(max_examples=EXAMPLES // 2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=_scenarios(), seed=st.integers(0, 5), pauses=st.lists(st.floats(0, DURATION), max_size=4))
def test_an_open_ended_run_counts_as_the_run_of_a_set_duration(data, seed, pauses):
    """The virtual lab's run has no end: up to any time, its bins are those of a run that ends later."""
    scenario = _runnable(data)
    whole = sim.simulate(scenario, duration=DURATION + 1, seed=seed, bin_width=config.LAB_BIN_WIDTH)
    engine = sim._Engine(scenario, "scenario", seed, math.inf, config.LAB_BIN_WIDTH, False, None, 1)
    for at in sorted(pauses) + [DURATION]:
        assert engine.advance(at) is None
    closed = int(DURATION / config.LAB_BIN_WIDTH)
    assert len(engine.bins) == closed + 1  # and the one open
    paused = TimeSeries(engine.bins[:closed], engine.names, config.LAB_BIN_WIDTH).columns()
    ended = TimeSeries(whole.timeseries().bins[:closed], engine.names, config.LAB_BIN_WIDTH).columns()
    assert paused == ended
