"""LLM traffic in virtual time: streams, time to first token, output tokens, mid-stream
errors; and the first release's scenarios unchanged by any of it."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import pytest

from gwlab import config
from gwlab.sim import simulate
from gwlab.stats import RELATIVE_ERROR
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

SCENARIOS = Path(__file__).parent.parent / "scenarios"

BEFORE_LLM_TRAFFIC = {
    ("seed", 1): "4d60d77d7be395aa49ee8c5ac121b938b3356bb0a14b45bc03093a4eaa95fd2e",
    ("seed", 2): "c338996418b1029356c1b94b9ca7a7069e22e0cad08814dc8e4d2b08bc130896",
    ("p1_outage", 1): "7478f0b70fd3f0d73d6a3d0ed118a14bbf428b0552472796f6b01879cdaa0320",
    ("p1_outage", 2): "f12185d073853acc58f36ff1936dc3541c9126618eda56c73cd11ccc65766b76",
    ("p2_brownout", 1): "c83af04fcb227aecae67b7f57178202d8edd890089307836a3a7de69ae9b76b5",
    ("p2_brownout", 2): "9f4f6195dcde64b6f346e8e9bad7c98d19f3a8796eb5490a1dd068fdb123587d",
    ("spike", 1): "a03c6ea3fa548a8e270d5bcf13408ee1aabfc011c2dae3fbaa6527bef4347076",
    ("spike", 2): "4ecb1305e5d3149d775f3fbd00396e5ce5bab00649d42974b46e317915c3b606",
}
"""SHA-256 of ``simulate(scenario, duration=120, seed).to_json()``, as the simulator wrote it
before it modelled LLM traffic."""


@pytest.mark.parametrize("name, seed", list(BEFORE_LLM_TRAFFIC), ids=lambda v: str(v))
def test_the_first_releases_scenarios_give_the_same_json_byte_for_byte(name, seed):
    result = simulate(SCENARIOS / f"{name}.toml", duration=120, seed=seed)
    assert hashlib.sha256(result.to_json().encode()).hexdigest() == BEFORE_LLM_TRAFFIC[name, seed]


def streaming(**provider) -> config.Scenario:
    """Ten closed-loop clients that always stream, to one provider with token timing."""
    fields = {"ttft": 0.2, "decode_rate": 50.0, "output_tokens": 101.0, **provider}
    return config.from_dict({"providers": {"a": fields}, "workload": {"clients": 10, "stream_share": 1.0}})


def test_fixed_timing_gives_exact_counts_and_timings():
    """Each call lasts 0.2 + 100 / 50 = 2.2 s: in 21.9 s each client completes 9 calls of
    101 tokens and is cut off in its tenth."""
    summary = simulate(streaming(), duration=21.9, seed=1).summary()
    assert summary["codes"] == {"200": 90, "499": 10}
    assert summary["output_tokens"] == {"total": 90 * 101, "per_second": 90 * 101 / 21.9}
    for q in ("p50", "p99", "max"):
        assert summary["ttft"][q] == pytest.approx(0.2, rel=RELATIVE_ERROR)
        assert summary["time_per_output_token"][q] == pytest.approx(0.02, rel=RELATIVE_ERROR)
        assert summary["latency"][q] == pytest.approx(2.2, rel=RELATIVE_ERROR)


def test_max_tokens_caps_every_answer():
    scenario = streaming()
    capped = config.merge(scenario, {"workload": {"max_tokens": 26}})
    summary = simulate(capped, duration=21.9, seed=1).summary()
    # 0.2 + 25 / 50 = 0.7 s a call: 31 in 21.7 s per client, the 32nd cut off.
    assert summary["codes"] == {"200": 310, "499": 10}
    assert summary["output_tokens"]["total"] == 310 * 26


def test_the_stream_share_decides_who_streams_and_only_streams_have_a_ttft():
    never = config.merge(streaming(), {"workload": {"stream_share": 0.0}})
    summary = simulate(never, duration=30, seed=1).summary()
    assert "ttft" not in summary and "time_per_output_token" not in summary
    assert summary["output_tokens"]["total"] == summary["codes"]["200"] * 101
    half = config.merge(streaming(), {"workload": {"stream_share": 0.5}})
    series = simulate(half, duration=600, seed=1).timeseries()
    ttft_counts = sum(b.tally.ttft.count for b in series)
    answered = sum(b.tally.count([200]) for b in series)
    # Binomial(answered, 1/2): 4 standard deviations either side fail by chance once in 15,000 runs.
    assert abs(ttft_counts - answered / 2) <= 4 * math.sqrt(answered / 4)


def test_mid_stream_errors_count_apart_charge_the_breaker_and_carry_their_tokens():
    scenario = streaming(stream_error_rate=1.0)
    summary = simulate(scenario, duration=60, seed=3).summary()
    assert set(summary["codes"]) <= {"stream_error", "499"} and summary["codes"]["stream_error"] > 0
    assert summary["admitted"] == summary["codes"]["stream_error"]
    assert summary["availability"] == 0 and summary["goodput"] == 0
    assert summary["providers"]["a"]["trips"] > 0
    assert summary["providers"]["a"]["codes"]["stream_error"] == summary["codes"]["stream_error"]
    assert 0 < summary["output_tokens"]["total"] <= 101 * summary["codes"]["stream_error"]
    # Not a stream: the same failures are 502s, and the tokens never reached anyone.
    whole = config.merge(scenario, {"workload": {"stream_share": 0.0}})
    summary = simulate(whole, duration=60, seed=3).summary()
    assert set(summary["codes"]) <= {"502", "499"} and "output_tokens" not in summary


def test_llm_columns_appear_with_llm_traffic_only():
    columns = simulate(streaming(stream_error_rate=0.1), duration=20, seed=1).timeseries().columns()
    assert {"stream_error", "ttft_p50", "ttft_p95", "ttft_p99", "output_tokens"} <= set(columns)
    assert sum(columns["output_tokens"]) > 0
    seed = simulate(None, duration=20, seed=1).timeseries().columns()
    assert not {"stream_error", "ttft_p50", "output_tokens"} & set(seed)


def test_llm_runs_are_deterministic():
    scenario = streaming(ttft_distribution="lognormal", ttft_p99=2.0, output_distribution="exponential",
                         stream_error_rate=0.05, error_rate=0.05)
    scenario = config.merge(scenario, {"workload": {"stream_share": 0.6, "max_tokens": 300}})
    assert simulate(scenario, duration=120, seed=5).to_json() == simulate(scenario, duration=120, seed=5).to_json()


# -- the tokens-per-minute limit --------------------------------------------------------------


def tokens_limited(clients: int, events: list | None = None, **workload) -> config.Scenario:
    """``clients`` closed-loop clients to one provider that answers 8 tokens after 0.1 s;
    600 tokens a minute (10 a second) at the gateway, its request limit far away. Each
    request's prompt is 2 tokens."""
    return config.from_dict({"providers": {"a": {"latency": 0.1, "output_tokens": 8.0}},
                             "limiter": {"tpm": 600, "default_max_tokens": 50},
                             "workload": {"clients": clients, "prompt_tokens": 2, **workload},
                             "events": events or []})


def test_a_tokens_limit_admits_exactly_its_capacity_then_its_rate():
    """Each request reserves 2 + 8 tokens and uses them all. Ten clients take 100 tokens every
    0.1 s while a 0.1 s earns 1: 60 requests by t = 0.5 (5 tokens left), then the ten
    clients all wait for the next 10 tokens, due at each whole second from 1 s on; one gets
    them, nine are refused again, and the one admitted is refused on its return 0.1 s later."""
    summary = simulate(tokens_limited(10, max_tokens=8), duration=30.5, seed=1).summary()
    assert summary["codes"] == {"200": 60 + 30, "429": 10 + 30 * 10}
    assert summary["output_tokens"]["total"] == 90 * 8


def test_a_reservation_larger_than_the_use_is_given_back_at_the_end_of_each_call():
    """One client reserves 2 + 50 (the default max_tokens) and uses 2 + 8: each 0.1 s cycle
    nets 10 tokens less the 1 it earns. It is admitted while 600 - 9k >= 52, for k = 0 .. 60;
    then it waits 0.1 s for its 52nd token, and from then on each answer leaves 43 tokens,
    9 short, so it is admitted once a second (6.2 s, 7.2 s, ... 20.2 s) and refused in
    between. Without the refund it would be admitted 11 times, then once every 5.2 s."""
    summary = simulate(tokens_limited(1), duration=20.5, seed=1).summary()
    assert summary["codes"] == {"200": 61 + 15, "429": 1 + 15}


def test_without_a_tokens_limit_the_prompt_and_default_change_nothing():
    plain = config.from_dict({"providers": {"a": {"latency": 0.1, "output_tokens": 8.0}}})
    changed = config.merge(plain, {"workload": {"prompt_tokens": 1000}, "limiter": {"default_max_tokens": 7}})
    results = [simulate(s, duration=10, seed=1).to_dict() for s in (plain, changed)]
    for result in results:
        del result["summary"]["scenario"]  # which shows the fields changed
    assert results[0] == results[1]


@pytest.mark.parametrize(("patch", "message"), [
    ({"workload": {"max_tokens": 599}}, "each request reserves 601 tokens (workload.prompt_tokens = 2 and "
                                        "workload.max_tokens = 599)"),
    ({"limiter": {"default_max_tokens": 4096}}, "each request reserves 4098 tokens (workload.prompt_tokens = 2 and "
                                                "limiter.default_max_tokens = 4096 (workload.max_tokens = 0))"),
])
def test_a_workload_whose_requests_the_tokens_limit_can_never_admit_is_refused(patch, message):
    with pytest.raises(config.ConfigError, match=re.escape(f"scenario: limiter.tpm = 600: {message}")):
        simulate(config.merge(tokens_limited(1), patch), duration=1)
    with pytest.raises(config.ConfigError, match=re.escape(f"scenario: event at 5 s: limiter.tpm = 600: {message}")):
        simulate(tokens_limited(1, [{"at": 5, **patch}]), duration=10)


def provider_limited(clients: int, tpm: int = 600, **provider) -> config.Scenario:
    """:func:`tokens_limited`, with the limit of 600 tokens a minute the provider's own
    instead of the gateway's (and no breaker: its 429s would open it)."""
    scenario = tokens_limited(clients)
    return config.merge(scenario, {"limiter": {"tpm": 0}, "breaker": {"enabled": False},
                                   "providers": {"a": {"tpm": tpm, **provider}}})


@pytest.mark.parametrize(("clients", "workload", "duration"), [(10, {"max_tokens": 8}, 30.5), (1, {}, 20.5)],
                         ids=["capacity-then-rate", "refunds"])
def test_a_providers_own_tokens_limit_refuses_as_the_gateways_would_but_as_the_provider(clients, workload, duration):
    """The two runs above, with the limit moved to the provider: the same answers at the same
    moments (both take and settle the same reservations, and a client waits the same
    retry-after), but each 429 is the provider's, told apart in the summary."""
    gateway = simulate(config.merge(tokens_limited(clients), {"workload": workload, "breaker": {"enabled": False}}),
                       duration=duration, seed=1, keep_requests=True)
    provider = simulate(config.merge(provider_limited(clients), {"workload": workload}),
                        duration=duration, seed=1, keep_requests=True)
    assert provider.summary()["codes"] == gateway.summary()["codes"]
    assert [(r.sent, r.status) for r in provider.requests] == [(r.sent, r.status) for r in gateway.requests]
    refused = {r.provider for r in provider.requests if r.status == 429}
    assert refused == {"a"} and {r.provider for r in gateway.requests if r.status == 429} == {"none"}


@pytest.mark.parametrize(("providers", "fails"), [
    ({"a": {"tpm": 600}}, True),
    ({"a": {"tpm": 600}, "b": {"tpm": 700}}, True),
    ({"a": {"tpm": 600}, "b": {"tpm": 4098}}, False),  # b takes them all
    ({"a": {"tpm": 600}, "b": {"tpm": 0}}, False),  # b has no limit
    ({"a": {"tpm": 600}, "b": {"tpm": 0, "weight": 0.0}}, True),  # b is never called
])
def test_a_workload_no_provider_can_ever_take_is_refused(providers, fails):
    scenario = config.from_dict({"providers": providers, "workload": {"clients": 1}})
    if not fails:
        assert simulate(scenario, duration=1, seed=1).summary()["codes"]["200"] > 0
        return
    limits = ", ".join(f"providers.{name}.tpm = {p['tpm']}" for name, p in providers.items()
                       if p.get("weight", 1.0) > 0)
    with pytest.raises(config.ConfigError, match=re.escape(
            f"scenario: {limits}: each request reserves 4098 tokens (workload.prompt_tokens = 2 and "
            "limiter.default_max_tokens = 4096 (workload.max_tokens = 0)), more than any provider's limit")):
        simulate(scenario, duration=1)


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_tokens_limit_switched_on_by_an_event_admits_from_then_on(replicas):
    """Without a tokens limit a request reserves nothing and the simulator asks the admission
    alone; once an event switches ``limiter.tpm`` on, every replica admits with the tokens
    bucket too: ten clients sending 100 requests a second of 10 tokens each meet its 600 a
    minute, and only after the event."""
    scenario = config.from_dict({"providers": {"a": {"latency": 0.1, "output_tokens": 8.0}},
                                 "limiter": {"default_max_tokens": 50},
                                 "workload": {"clients": 10, "prompt_tokens": 2, "max_tokens": 8},
                                 "events": [{"at": 10, "limiter": {"tpm": 600}}]})
    before = simulate(scenario, duration=9.95, seed=1, replicas=replicas).summary()["codes"]
    after = simulate(scenario, duration=20.05, seed=1, replicas=replicas).summary()["codes"]
    assert "429" not in before
    assert after["429"] >= 90
