"""The simulator against theory: exact where the core makes it exact, stated bounds where
the numbers are random, and byte-for-byte determinism across processes."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gwlab
from gwlab import balancer, config, sim, workload
from gwlab.config import ConfigError, Event
from gwlab.sim import simulate
from gwlab.streams import stream
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

OPEN = {"mode": "open"}


def scenario(**sections) -> config.Scenario:
    return config.from_dict(sections)


def admitted(result) -> int:
    return sum(result.timeseries()["admitted"])


@pytest.mark.parametrize("rate, burst", [(1000.0, 1000.0), (100.0, 50.0)])
def test_overload_at_three_times_admits_burst_plus_rate_times_duration(rate, burst):
    s = scenario(limiter={"rate": rate, "burst": burst}, workload={**OPEN, "rate": 3 * rate})
    result = simulate(s, duration=60, seed=5)
    assert abs(admitted(result) - (burst + rate * 60)) <= 1
    summary = result.summary()
    assert summary["codes"]["429"] == summary["offered"] - admitted(result)


def test_shares_follow_weights_within_four_sigma_with_breakers_off():
    # All providers answer after the same 0.1 s, so which requests are cut off at the end
    # does not depend on the pick: each routed request went to provider i independently with
    # probability w_i / sum(w), and its count is binomial(N, p_i). A 4-sigma band holds with
    # probability 1 - 6e-5 per provider (normal approximation; N is about 30000).
    providers = {name: {"weight": w, "latency": 0.1, "error_rate": e}
                 for name, w, _, e in config.SEED_PROVIDERS}
    s = scenario(breaker={"enabled": False}, providers=providers, workload={**OPEN, "rate": 500.0})
    summary = simulate(s, duration=60, seed=11).summary()
    n = summary["admitted"]
    assert n > 29000
    total = sum(w for _, w, _, _ in config.SEED_PROVIDERS)
    for name, weight, _, _ in config.SEED_PROVIDERS:
        p = weight / total
        got = summary["providers"][name]["requests"]
        assert abs(got - n * p) <= 4 * math.sqrt(n * p * (1 - p)), (name, got, n * p)


def test_littles_law_in_flight_integral_equals_throughput_times_latency():
    providers = {"p1": {"weight": 70, "latency": 0.1, "distribution": "exponential", "error_rate": 0.05},
                 "p2": {"weight": 30, "latency": 0.4, "distribution": "lognormal", "p99": 3.0}}
    s = scenario(providers=providers, workload={**OPEN, "rate": 400.0})
    duration = 120.0
    result = simulate(s, duration=duration, seed=3)
    ts = result.timeseries()
    mean_in_flight = sum(v * w for v, w in zip(ts["in_flight"], ts["width"])) / duration
    summary = result.summary()
    throughput = summary["admitted"] / duration
    assert mean_in_flight == pytest.approx(throughput * summary["latency"]["mean"], rel=0.01)


def failing_alone(**workload) -> config.Scenario:
    return scenario(providers={"p1": {"weight": 1, "latency": 0.1, "error_rate": 1.0}},
                    workload={"mode": "closed", "clients": 1, **workload})


def test_provider_failing_every_call_shows_golden_cooldowns_through_half_open_probes():
    # A 40 s think time outlasts every cooldown: each request after the third finds the
    # breaker half-open, probes, fails and reopens with the next cooldown.
    result = simulate(failing_alone(think_time=40.0), duration=350, seed=1)
    opens = [t for t in result.transitions if t.target == "open"]
    assert [t.cooldown for t in opens] == [1, 2, 4, 8, 16, 30, 30]
    assert [t.source for t in opens] == ["failing"] + ["half_open"] * 6
    assert [(t.source, t.target) for t in result.transitions[:3]] == [
        ("failing", "open"), ("open", "half_open"), ("half_open", "open")]
    assert result.transitions[1].time == result.transitions[0].time + 1.0
    assert result.flips == {"p1": 1}
    assert result.summary()["providers"]["p1"]["trips"] == 7


def test_provider_failing_every_call_shows_golden_cooldowns_through_forced_probes():
    # Without think time the only provider is called while open (the fallback), and each
    # failed forced probe reopens it with the next cooldown.
    result = simulate(failing_alone(), duration=2, seed=1)
    opens = [t.cooldown for t in result.transitions if t.target == "open"]
    assert opens[:8] == [1, 2, 4, 8, 16, 30, 30, 30]
    # Every request after the first three found the breaker open and was a fallback.
    assert result.summary()["fallbacks"] == result.summary()["offered"] - 3


def test_common_random_numbers_changing_p2_latency_leaves_arrivals_and_p1_draws():
    base = {"breaker": {"enabled": False}, "workload": {**OPEN, "rate": 300.0},
            "providers": {"p1": {"weight": 70, "latency": 0.1, "distribution": "exponential", "error_rate": 0.1},
                          "p2": {"weight": 30, "latency": 0.5}}}
    slower = {**base, "providers": {**base["providers"], "p2": {"weight": 30, "latency": 1.5,
                                                                 "distribution": "lognormal", "p99": 6.0}}}
    a = simulate(base, duration=20, seed=9, keep_requests=True)
    b = simulate(slower, duration=20, seed=9, keep_requests=True)
    assert sorted(r.sent for r in a.requests) == sorted(r.sent for r in b.requests)

    def p1_calls(result):
        return sorted((r.sent, r.latency, r.status) for r in result.requests if r.provider == "p1")

    assert p1_calls(a) == p1_calls(b)
    assert len(p1_calls(a)) > 4000
    assert sorted(r.latency for r in a.requests if r.provider == "p2") != \
        sorted(r.latency for r in b.requests if r.provider == "p2")


OUTAGE = Path(__file__).resolve().parents[1] / "scenarios" / "p1_outage.toml"
_JSON_SCRIPT = "import sys, gwlab; sys.stdout.write(gwlab.simulate(sys.argv[1], duration=90, seed=int(sys.argv[2])).to_json())"


def run_json(seed: int) -> str:
    done = subprocess.run([sys.executable, "-c", _JSON_SCRIPT, str(OUTAGE), str(seed)],
                          capture_output=True, text=True, check=True)
    return done.stdout


def test_same_seed_gives_byte_identical_json_across_processes_and_other_seeds_differ():
    first, second, other = run_json(4), run_json(4), run_json(5)
    assert first == second
    assert first != other
    assert '"mode": "simulated"' in first and '"transitions"' in first


NUMPY_ARGUMENTS = [
    ({"seed": np.int64(3)}, {"seed": 3}),
    ({"seed": np.uint8(3), "duration": np.float32(4.5)}, {"seed": 3, "duration": 4.5}),
    ({"duration": np.int16(4), "bin_width": np.float64(0.5), "replicas": np.int32(2)},
     {"duration": 4, "bin_width": 0.5, "replicas": 2}),
    ({"scenario": {"workload": {"clients": np.int64(7), "think_time": np.float64(0.25)},
                   "events": [{"at": np.float32(2.0), "providers": {"p1": {"error_rate": np.float64(0.5)}}}]}},
     {"scenario": {"workload": {"clients": 7, "think_time": 0.25},
                   "events": [{"at": 2.0, "providers": {"p1": {"error_rate": 0.5}}}]}}),
]


@pytest.mark.parametrize(("numpy", "plain"), NUMPY_ARGUMENTS)
def test_numpy_numbers_give_the_json_of_the_plain_numbers_they_hold(numpy, plain):
    base = {"duration": 5, "seed": 1}
    assert simulate(**{**base, **numpy}).to_json() == simulate(**{**base, **plain}).to_json()


def test_global_random_state_untouched():
    random.seed(123)
    before = random.getstate()
    simulate(duration=5, seed=2)
    assert random.getstate() == before


def test_summary_has_the_shared_schema_and_simulation_fields():
    s = scenario(workload={**OPEN, "rate": 200.0})
    summary = simulate(s, duration=10, seed=1).summary()
    assert summary["mode"] == "simulated" and summary["seed"] == 1
    assert summary["scenario"] == s.to_dict()
    assert summary["offered"] == sum(int(n) for n in summary["codes"].values())
    assert set(summary) >= {"duration", "offered", "admitted", "codes", "rates", "availability",
                            "goodput", "latency", "providers", "trips", "fallbacks"}


def test_closed_loop_waits_retry_after_after_a_429():
    # Two clients, a bucket of one token refilled once a second: every second one request
    # gets in and the other client is told to retry when the next token is due.
    s = scenario(limiter={"rate": 1.0, "burst": 1.0}, workload={"mode": "closed", "clients": 2, "think_time": 0.0},
                 providers={"p1": {"latency": 0.25}})
    result = simulate(s, duration=10, seed=1, keep_requests=True)
    assert result.summary()["codes"]["200"] + result.summary()["codes"].get("499", 0) == 10
    for r in result.requests:
        if r.status == 429:
            assert r.sent == r.done


def test_open_loop_rate_change_redraws_arrivals_from_the_change():
    s = scenario(workload={**OPEN, "rate": 100.0}, events=[{"at": 10.0, "workload": {"rate": 1000.0}}])
    ts = simulate(s, duration=20, seed=8).timeseries(10)
    low, high = ts["offered"]
    assert abs(low - 1000) <= 4 * math.sqrt(1000)     # Poisson: variance = mean
    assert abs(high - 10000) <= 4 * math.sqrt(10000)


def test_closed_loop_client_count_events_start_and_retire_clients():
    s = scenario(providers={"p1": {"latency": 0.5}}, breaker={"enabled": False},
                 workload={"mode": "closed", "clients": 10},
                 events=[{"at": 10.0, "workload": {"clients": 30}}, {"at": 20.0, "workload": {"clients": 5}}])
    ts = simulate(s, duration=30, seed=1).timeseries(10)
    # One request per client per 0.5 s. The event at 20 s runs before the answers due at
    # 20 s (it was scheduled first), so 25 clients retire on those answers.
    assert ts["offered"] == [200, 600, 100]
    assert ts["in_flight"] == pytest.approx([10, 30, 5])


def test_custom_balancer_registered_changes_the_result(monkeypatch):
    class OnlyLast:
        """Every request to the last eligible provider."""

        def pick(self, choices, rng):
            return choices[-1]

    monkeypatch.setattr(balancer, "_REGISTRY", dict(balancer._REGISTRY))  # registered for this test only
    balancer.register("only_last_sim_test", OnlyLast)
    base = {"workload": {**OPEN, "rate": 100.0}, "breaker": {"enabled": False}}
    plain = simulate(base, duration=10, seed=1).summary()
    custom = simulate({**base, "gateway": {"balancer": "only_last_sim_test"}}, duration=10, seed=1).summary()
    assert plain["providers"]["p1"]["requests"] > 0
    assert custom["providers"]["p1"]["requests"] == custom["providers"]["p2"]["requests"] == 0
    assert custom["providers"]["p3"]["requests"] == custom["admitted"] > 0


@pytest.mark.parametrize("kwargs, field", [
    ({"duration": -1}, "duration = -1"),
    ({"duration": math.inf}, "duration = inf"),
    ({"duration": 10, "bin_width": 0}, "bin_width = 0"),
    ({"duration": 10, "seed": "x"}, "seed = 'x'"),
    ({"duration": 10**400}, "duration = 1E+400: expected a number >= 1e-06 and <= 31536000"),
    ({"duration": 2.0 * config.MAX_SECONDS}, "duration = 63072000.0: expected a number >= 1e-06 and <= 31536000"),
    ({"duration": 10, "bin_width": 1e-7}, "bin_width = 1e-07: expected a number >= 1e-06"),
    ({"duration": 10, "bin_width": 1e-6}, "duration = 10: expected at most 100000 bins of bin_width = 1e-06 s, so <= 0.1"),
    ({"duration": 100_001}, "duration = 100001: expected at most 100000 bins of bin_width = 1 s, so <= 100000"),
    ({"duration": 10, "seed": -1}, "seed = -1: expected a whole number >= 0 and <= 18446744073709551615"),
    ({"duration": 10, "seed": 2**64}, "seed = 18446744073709551616: expected a whole number >= 0"),
    ({"duration": 1, "keep_requests": "no"}, "simulate: keep_requests = 'no': expected true or false"),
    ({"duration": 1, "keep_requests": 1}, "simulate: keep_requests = 1: expected true or false"),
    ({"duration": 1, "progress": 5}, "simulate: progress = 5: expected a function called with the fraction done"),
])
def test_bad_arguments_name_the_argument(kwargs, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        simulate(None, **kwargs)


@pytest.mark.parametrize("data, field", [
    ({"events": [{"at": -1.0, "workload": {"rate": 5.0}}]}, "events[0].at = -1"),
    ({"events": [{"at": 1.0, "providers": {"p9": {"weight": 1}}}]}, "'providers.p9'"),
    ({"providers": {"p1": {"distribution": "lognormal", "latency": 0.5, "p99": 0.2}}}, "providers.p1.p99 = 0.2"),
    ({"providers": {"p1": {"latency": 0.0}}, "workload": {"mode": "closed"}},
     "providers.p1.latency = 0 (fixed) with workload.think_time = 0"),
    ({"providers": {"p1": {"latency": 0.0, "distribution": "exponential"}, "p2": {"weight": 0}}},
     "providers.p1.latency = 0 (exponential)"),
    ({"events": [{"at": 5.0, "providers": {"p2": {"latency": 0.0}}}]},
     "event at 5 s: providers.p2.latency = 0"),
])
def test_bad_scenarios_raise_config_errors_naming_the_field(data, field):
    with pytest.raises(ConfigError) as err:
        simulate(data, duration=1)
    assert field in str(err.value)


def test_zero_latency_is_fine_with_think_time_or_open_loop():
    zero = {"p1": {"latency": 0.0}}
    assert simulate({"providers": zero, "workload": {"clients": 2, "think_time": 0.5}}, duration=2).summary()["admitted"] == 8
    assert simulate({"providers": zero, "workload": {**OPEN, "rate": 50.0}}, duration=2).summary()["admitted"] > 50


class SteppingClock:
    """A wall clock for :mod:`gwlab.sim` that moves ``step`` seconds at every reading, so
    whether the throttled progress reports are due does not depend on the machine's speed."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


def test_progress_reports_fractions_and_finishes_at_one(monkeypatch):
    # A second of wall clock passes between two readings: every closed bin is due a report.
    monkeypatch.setattr(sim, "time", SteppingClock(1.0))
    seen: list[float] = []
    simulate(duration=20, seed=1, progress=seen.append)
    during = [f for f in seen if f < 1.0]
    assert len(during) >= 10  # 20 bins of 1 s: one report per bin but the last
    assert all(0 < f < 1 for f in during)
    assert all(a < b for a, b in zip(during, during[1:]))
    assert seen[len(during):] and set(seen[len(during):]) == {1.0}  # then the end, and only it


def test_progress_is_throttled_by_the_wall_clock(monkeypatch):
    # A wall clock that never moves: no report is due before the end.
    monkeypatch.setattr(sim, "time", SteppingClock(0.0))
    seen: list[float] = []
    simulate(duration=20, seed=1, progress=seen.append)
    assert seen == [1.0]


def test_package_exports_simulate():
    assert gwlab.simulate is simulate


def test_figure_and_offline_report():
    from gwlab import plots, report

    result = simulate(OUTAGE, duration=90, seed=1)
    fig = result.figure()
    assert [a.text for a in fig.layout.annotations] == list(plots.PANELS)
    names = {t.name for t in fig.data}
    assert {"200", "502", "p50", "p99", "p1", "p2", "p3", "state", "opened", "tokens"} <= names
    opened = next(t for t in fig.data if t.name == "opened")
    assert list(opened.x) == [t.time for t in result.transitions if t.target == "open"]
    page = report.render(result)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script src=" not in page          # plotly.js is inline: the page opens offline
    assert "Plotly.newPlot" in page
    assert f"<td>{result.summary()['offered']}</td>" in page


def test_switching_between_closed_and_open_loop():
    s = scenario(providers={"p1": {"latency": 0.5}}, breaker={"enabled": False},
                 workload={"mode": "closed", "clients": 4},
                 events=[{"at": 10.0, "workload": {"mode": "open", "rate": 50.0}},
                         {"at": 20.0, "workload": {"mode": "closed", "clients": 2}}])
    result = simulate(s, duration=30, seed=1)
    ts = result.timeseries(10)
    assert ts["offered"][0] == 80
    assert abs(ts["offered"][1] - 500) <= 4 * math.sqrt(500)   # Poisson: variance = mean
    assert ts["offered"][2] == 40
    # Open-loop requests sent just before 20 s finish by 20.5 s; then only the two clients.
    assert result.timeseries()["in_flight"][21:] == pytest.approx([2] * 9)


def test_events_are_patches_so_two_events_on_different_fields_both_hold():
    s = {"providers": {"p1": {"weight": 1.0, "latency": 0.01}, "p2": {"weight": 1.0, "latency": 0.01}},
         "workload": {"mode": "open", "rate": 300.0},
         "events": [{"at": 10.0, "limiter": {"rate": 50.0, "burst": 1.0}}, {"at": 20.0, "providers": {"p1": {"weight": 0.0}}}]}
    ts = simulate(s, duration=30, seed=4).timeseries(10)
    assert ts["admitted"][0] > 2500
    # At most 50/s get in while the second event holds too (fewer: a token waits for an arrival).
    assert 400 < ts["admitted"][1] <= 501 and 400 < ts["admitted"][2] <= 501
    assert ts["p1.calls"][2] == 0 < ts["p1.calls"][1]


def test_a_refused_event_is_logged_counted_and_the_later_ones_apply(caplog):
    # Built by hand past the load-time checks: the first event cannot fit, the second can.
    s = dataclasses.replace(config.Scenario(), events=(
        Event(1.0, {"breaker": {"max_cooldown": 0.5}}), Event(2.0, {"limiter": {"rate": 500.0}})))
    engine = sim._Engine(s, "hand-built", 1, 3.0, 1.0, False, None, 1)
    with caplog.at_level(logging.WARNING, logger="gwlab.timeline"):
        result = engine.advance(3.0)
    assert result.summary()["events_refused"] == 1
    assert engine.router.scenario.limiter.rate == 500.0
    assert [r.getMessage() for r in caplog.records] == [
        "event at 1 s: breaker.max_cooldown = 0.5: not applied: hand-built: event at 1 s: breaker.max_cooldown = 0.5: "
        "expected a number >= breaker.base_delay (1)"
    ]


def test_the_summary_counts_refused_events_even_when_there_are_none():
    assert simulate("scenarios/spike.toml", duration=5, seed=1).summary()["events_refused"] == 0


def test_a_client_that_would_send_again_at_the_same_instant_stops_the_run_with_its_time(monkeypatch):
    monkeypatch.setattr(workload, "pause_after", lambda status, retry_after, think_time: 0.0)
    s = {"limiter": {"rate": 3.0, "burst": 1.0}, "providers": {"a": {"weight": 1.0, "latency": 0.01}},
         "workload": {"mode": "closed", "clients": 2}}
    with pytest.raises(sim.Stuck, match=r"^scenario: a closed-loop client that sent at t = 0\.0 s was scheduled "
                                        r"to send again at t = 0\.0 s, not later: virtual time would stand still$"):
        simulate(s, duration=2.0)


def test_every_test_module_that_simulates_runs_under_a_wall_clock_bound():
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        text = path.read_text()
        if re.search(r"\bsimulate\(|\"simulate\"", text):
            # SIMULATION_TIMEOUT, or the larger bound of a module that also builds or serves.
            assert re.search(r"^pytestmark = pytest\.mark\.timeout\(\w+", text, re.M), path.name


def test_a_client_meeting_the_limiter_advances_the_clock_exactly():
    # The example, which never ended: one client, a bucket of 3 per second. Tokens
    # come at 0, 1/3, 2/3, 1, 4/3 and 5/3 s; after each answer (10 ms) the client is refused
    # once and waits for the next token.
    s = {"limiter": {"rate": 3.0, "burst": 1.0}, "providers": {"a": {"weight": 1.0, "latency": 0.01}},
         "workload": {"mode": "closed", "clients": 1}}
    assert simulate(s, duration=2.0).summary()["codes"] == {"200": 6, "429": 6}


def test_an_open_loop_arrival_finding_the_cap_in_flight_is_not_sent_and_counted():
    # Calls hang for 10 s, past the 5 s run: the first 50 arrivals stay in flight (cut off at
    # the end), every later one finds the cap full.
    s = scenario(providers={"p1": {"weight": 1, "outage": "hang"}}, workload={**OPEN, "rate": 100, "max_in_flight": 50})
    summary = simulate(s, duration=5, seed=3).summary()
    rng, t, arrivals = stream(3, "arrivals"), 0.0, -1
    while t < 5:
        t, arrivals = workload.next_arrival(t, 100.0, rng), arrivals + 1
    assert (summary["offered"], summary["codes"]) == (50, {"499": 50})
    assert summary["saturated"] == arrivals - 50 > 300
    assert summary["achieved_offered_rate"] == 50 / 5


def test_the_default_cap_leaves_every_scenario_as_it_was():
    # The cap is an added field: at its default it is not in the scenario's data, and no
    # shipped scenario nor the seed's open loop reaches it, so their outputs are unchanged.
    assert "max_in_flight" not in config.Scenario().to_dict()["workload"]
    for path in sorted((Path(gwlab.__file__).parent.parent / "scenarios").glob("*.toml")):
        if all(p.kind == "simulated" for p in config.load(path).providers):  # a real upstream is not simulated
            assert "saturated" not in simulate(path, duration=120).summary(), path.name
    assert "saturated" not in simulate(scenario(workload=OPEN), duration=120).summary()


@pytest.mark.parametrize("seed, rate", [(1, 50.0), (9, 300.0), (4, 1000.0)])
def test_open_loop_arrivals_are_the_live_clients_poisson_process(seed, rate):
    """The engine writes :func:`~gwlab.workload.next_arrival` out in its loop: its arrivals
    are still exactly that function's, from the seed's arrivals stream, as the live open-loop
    clients' are (``tests/test_loadgen.py``)."""
    result = simulate({"workload": {**OPEN, "rate": rate}}, duration=5, seed=seed, keep_requests=True)
    draws, expected, now = stream(seed, "arrivals"), [], 0.0
    while (now := workload.next_arrival(now, rate, draws)) < 5:
        expected.append(now)
    sent = sorted(r.sent for r in result.requests)
    assert len(sent) == len(expected) >= rate * 5 / 2
    first = next((i for i, (a, b) in enumerate(zip(sent, expected)) if a != b), None)
    assert first is None, f"arrival {first}: {sent[first]!r}, expected {expected[first]!r}"
