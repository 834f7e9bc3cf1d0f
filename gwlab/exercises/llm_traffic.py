"""Checks for ``08_llm_traffic``: queueing at a provider with finite capacity, and why limits
are counted in tokens.

:func:`check_mean_wait`: the mean wait for a slot of the M/M/c provider :data:`MMC` (Poisson
arrivals, exponential calls, ``slots`` calls at once, a queue that never fills), from the
Erlang C formula. Right within :data:`WAIT_TOLERANCE` of the formula, and, as a second
opinion, within :data:`WAIT_SE_BOUND` standard errors of the mean wait the simulator measures
over :data:`MMC_SEEDS`. The simulated mean comes from batches of :data:`MMC_BATCH` seconds,
about ten times the queue's relaxation time 1 / (μ (√c − √a)²) (22 s here, μ the calls'
rate, a = λ / μ the offered load in slots), so the batch means are nearly independent and
their spread gives the standard error: 10 to 15% of the wait with these runs (57,600
calls), as the waits of a queue 80% busy swing widely. A correct answer misses the simulated
mean by 4 of them by chance about once in 15,000 runs; the formula decides, the simulation
shows that the gateway's queue is the one the formula describes. The characteristic wrong
answers miss by far more than both bounds, whatever the seeds: the mean time in the system (the wait plus the 4 s
call), the probability of waiting (Erlang C itself), the mean number waiting (λ times the
wait), the M/M/1 formula applied to one slot with λ / c, and a load computed with the call's
length in place of its rate.

:func:`check_slots`: the least number of slots that keeps the 99th percentile of the time to
first token at most :data:`TTFT_TARGET` for the streams of :func:`slots_scenario` at
:data:`SLOTS_RATE` requests per second. Judged on the p99 over all the streams of
:data:`SLOTS_SEEDS` (:data:`SLOTS_DURATION` seconds each, about 43,000 streams): the answer
must meet the target and one slot fewer must not. Why that is the idea's verdict and not the
seeds' luck: the offered load is a = λ E[call] ≈ 6.05 slots (:func:`offered_load`), and the
p99 falls steeply with each slot above it. Pooled over these eight seeds it is 5.42 s with 8
slots, 3.10 s with 9 and 2.20 s with 10; over three other sets of eight seeds (9-16, 17-24,
25-32) 5.0 to 5.87 s with 8 slots and 3.10 to 3.49 s with 9. So 8 slots miss the target and 9
meet it on any eight seeds, with a margin of twice the spread between seed sets or more.

:func:`check_tokens_per_minute`: the output tokens per minute that a limit of
:data:`RPM_LIMIT` requests per minute lets through, when every request is answered, for the
mix of ``scenarios/llm_mix.toml`` (80% chat, 20% long generations) and for a mix with
:data:`HEAVY_LONG_SHARE` long ones: ``RPM_LIMIT`` times the mean output of a request, the
log-normal means cut at ``max_tokens`` (:func:`mean_output_tokens`). Right within
:data:`TOKENS_TOLERANCE` of that expectation. A measurement is fine too: an hour of
:func:`mix_scenario` at the limit (36,000 requests) has a standard error under 0.7% and loses
under 1% to the answers still running at its end. The characteristic wrong answers miss by
more: the medians in place of the means (15% and 11% low), the means without the
``max_tokens`` cut (5% and 7% high), tokens per second (60 times too few).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Mapping

from gwlab import config
from gwlab.exercises import Verdict, direction, known_mistake, number, off_by, shown, whole, wrong_kind
from gwlab.sim import simulate
from gwlab.stats import LatencyHistogram

_NORMAL = NormalDist()
_Z99 = _NORMAL.inv_cdf(0.99)

# -- shared arithmetic --------------------------------------------------------------------


def lognormal_sigma(median: float, p99: float) -> float:
    """The σ of a log-normal given by its median and 99th percentile, as gwlab's providers
    are configured: ln(p99 / median) / z₀.₉₉."""
    return math.log(p99 / median) / _Z99


def lognormal_mean(median: float, p99: float, cap: float | None = None) -> float:
    """The mean of a log-normal of that median and p99, or of min(X, ``cap``) when a cap is
    given: e^(m + σ²/2) Φ((ln cap − m − σ²) / σ) + cap (1 − Φ((ln cap − m) / σ)), m = ln median."""
    sigma = lognormal_sigma(median, p99)
    mean = median * math.exp(sigma * sigma / 2)
    if cap is None:
        return mean
    m = math.log(median)
    return (mean * _NORMAL.cdf((math.log(cap) - m - sigma * sigma) / sigma)
            + cap * (1 - _NORMAL.cdf((math.log(cap) - m) / sigma)))


def mean_output_tokens(provider: config.ProviderConfig, max_tokens: int = 0) -> float:
    """The mean output of a call to ``provider`` whose request caps it at ``max_tokens``
    (0: no cap), to within half a token (gwlab rounds each drawn length to a whole number)."""
    cap = max_tokens or None
    if provider.output_distribution == "lognormal":
        return lognormal_mean(provider.output_tokens, provider.output_p99, cap)
    if provider.output_distribution == "exponential":
        mean = provider.output_tokens
        return mean if cap is None else mean * (1 - math.exp(-cap / mean))
    return provider.output_tokens if cap is None else min(provider.output_tokens, cap)


def mean_call(provider: config.ProviderConfig, max_tokens: int = 0) -> float:
    """The mean time a call to a provider with token timing holds its slot: its time to first
    token, then one token every 1 / decode_rate seconds after the first."""
    ttft = (lognormal_mean(provider.ttft, provider.ttft_p99) if provider.ttft_distribution == "lognormal"
            else provider.ttft)
    return ttft + (mean_output_tokens(provider, max_tokens) - 1) / provider.decode_rate


def erlang_c(slots: int, load: float) -> float:
    """The probability that an arrival waits in an M/M/c queue with ``slots`` servers and an
    offered load of ``load`` = λ / μ < ``slots`` (Erlang C)."""
    top = load ** slots / math.factorial(slots) * slots / (slots - load)
    return top / (sum(load ** k / math.factorial(k) for k in range(slots)) + top)


def _mean_wait(arrival_rate: float, mean_call: float, slots: int) -> float:
    """The mean wait for a slot of an M/M/c queue: C(c, a) / (c μ − λ)."""
    service_rate = 1 / mean_call
    return erlang_c(slots, arrival_rate * mean_call) / (slots * service_rate - arrival_rate)


# -- exercise 2: the mean wait of an M/M/c provider ----------------------------------------

MMC: Mapping[str, float] = {"arrival_rate": 3.2, "mean_call": 4.0, "slots": 16}
"""The provider of exercise 2: 3.2 requests per second, calls of 4 s on average
(exponentially distributed), 16 slots."""
MMC_SEEDS = (1, 2, 3)
MMC_DURATION = 6000.0
"""Simulated seconds of each seed's run."""
MMC_BATCH = 200.0
"""Seconds of each batch whose mean wait is one sample."""
WAIT_TOLERANCE = 0.02
"""Relative error allowed against the formula."""
WAIT_SE_BOUND = 4.0
"""Standard errors allowed against the simulated mean."""


def mmc_scenario(arrival_rate: float = MMC["arrival_rate"], mean_call: float = MMC["mean_call"],
                 slots: int = int(MMC["slots"])) -> config.Scenario:
    """One provider whose calls last an exponential time of mean ``mean_call`` seconds,
    ``slots`` at once, with a queue that never fills, under Poisson arrivals at
    ``arrival_rate`` per second; no breaker, no limit, no timeout that matters."""
    return config.from_dict({
        "providers": {"a": {"latency": mean_call, "distribution": "exponential", "capacity": slots,
                            "queue": config.MAX_CLIENTS}},
        "workload": {"mode": "open", "rate": arrival_rate, "max_in_flight": config.MAX_CLIENTS},
        "breaker": {"enabled": False}, "gateway": {"timeout": config.MAX_SECONDS}})


def simulated_waits(scenario: config.Scenario, mean_call: float, seeds=MMC_SEEDS, duration: float = MMC_DURATION,
                    batch: float = MMC_BATCH) -> tuple[float, float]:
    """The mean wait for a slot measured on ``seeds`` and its standard error, from batch
    means: each batch's mean latency less the calls' mean length."""
    waits = []
    for seed in seeds:
        for b in simulate(scenario, duration=duration, seed=seed, bin_width=batch).timeseries():
            waits.append(b.tally.latency.total / b.tally.latency.count - mean_call)
    mean = sum(waits) / len(waits)
    error = math.sqrt(sum((w - mean) ** 2 for w in waits) / (len(waits) - 1) / len(waits))
    return mean, error


def _wait_mistakes(wait: float) -> list[tuple[float, str]]:
    lam, call, c = MMC["arrival_rate"], MMC["mean_call"], int(MMC["slots"])
    load = lam * call
    per_slot = lam / c
    return [
        (wait + call, "that is the mean time in the system, the wait plus the 4 s call: the question is the wait "
                      "for a slot alone"),
        (erlang_c(c, load), "that is the probability of waiting, C(c, a); the mean wait divides it by c μ − λ"),
        (lam * wait, "that is the mean number waiting, λ times the wait (Little's law); divide by λ"),
        ((per_slot * call) / (1 / call - per_slot), "that treats each slot as an M/M/1 queue fed λ / c: pooling "
                                                     "the slots makes a shared queue wait much less"),
        (_wait_or_nan(lam, 1 / call, c), "that uses the call's length where its rate μ = 1 / 4 s belongs"),
    ]


def _wait_or_nan(arrival_rate: float, mean_call: float, slots: int) -> float:
    try:
        return _mean_wait(arrival_rate, mean_call, slots)
    except (ZeroDivisionError, OverflowError):
        return math.nan


def check_mean_wait(answer: float | None) -> Verdict:
    """Right when ``answer`` (seconds) is the M/M/c mean wait of :data:`MMC`: within
    :data:`WAIT_TOLERANCE` of the formula and :data:`WAIT_SE_BOUND` standard errors of the
    simulation."""
    wait = number(answer)
    if wait is None:
        return wrong_kind(answer, "the mean wait for a slot in seconds, a number (for example answer = 1.5)")
    answer = wait
    lam, call, c = MMC["arrival_rate"], MMC["mean_call"], int(MMC["slots"])
    want = _mean_wait(lam, call, c)
    error = abs(answer - want) / want
    if error > WAIT_TOLERANCE:
        hint = known_mistake(answer, _wait_mistakes(want), WAIT_TOLERANCE * abs(answer)) or (
            f"a = λ / μ = {lam:g} × {call:g} = {lam * call:g} slots busy on average; the wait is C(c, a) / (c μ − λ)")
        return Verdict(False, f"{answer:.4g} s is {direction(answer, want)} by {off_by(answer, want)}: {hint}.")
    measured, se = simulated_waits(mmc_scenario(), call)
    if abs(answer - measured) > WAIT_SE_BOUND * se:
        return Verdict(False, f"{answer:.4g} s agrees with the formula but not with the simulation "
                              f"({measured:.4g} ± {se:.2g} s): a bug in the simulator, please report it")
    return Verdict(True, f"{answer:.4g} s: Erlang C gives {want:.4g} s (a = {lam * call:g} of {c} slots busy, "
                         f"{erlang_c(c, lam * call):.1%} of the calls wait); {len(MMC_SEEDS)} simulated runs "
                         f"measure {measured:.4g} s with a standard error of {se:.2g} s, "
                         f"{abs(measured - want) / se:.1f} of them away")


# -- exercise 3: enough slots for a TTFT target ---------------------------------------------

SLOTS_RATE = 1.5
"""Requests per second offered to the provider of exercise 3 (90 a minute)."""
TTFT_TARGET = 4.0
"""Seconds the 99th percentile of the time to first token may take at most."""
SLOTS_SEEDS = (1, 2, 3, 4, 5, 6, 7, 8)
SLOTS_DURATION = 3600.0
"""Simulated seconds of each seed's run."""
MAX_SLOTS = 1000


def slots_scenario(slots: int, rate: float = SLOTS_RATE) -> config.Scenario:
    """The provider of exercise 3 with ``slots`` slots and a queue that never fills: a first
    token after a log-normal time (median 0.4 s, p99 1.5 s), then 50 tokens a second, answers
    log-normal of median 150 tokens and p99 600; every request streams, at ``rate`` per second."""
    return config.from_dict({
        "providers": {"p1": {"ttft": 0.4, "ttft_distribution": "lognormal", "ttft_p99": 1.5, "decode_rate": 50.0,
                             "output_tokens": 150.0, "output_distribution": "lognormal", "output_p99": 600.0,
                             "capacity": slots, "queue": config.MAX_CLIENTS}},
        "workload": {"mode": "open", "rate": rate, "stream_share": 1.0},
        "gateway": {"timeout": 600.0}, "breaker": {"count_rate_limited": False}})


def offered_load(rate: float = SLOTS_RATE) -> float:
    """Slots busy on average (a = λ × the mean call) for the provider of exercise 3."""
    return rate * mean_call(slots_scenario(1).providers[0])


def ttft_p99(slots: int, seeds=SLOTS_SEEDS, duration: float = SLOTS_DURATION) -> float:
    """The 99th percentile of the time to first token over all the streams of ``seeds``."""
    pooled = LatencyHistogram()
    for seed in seeds:
        result = simulate(slots_scenario(slots), duration=duration, seed=seed, bin_width=duration)
        for b in result.timeseries():
            pooled.merge(b.tally.ttft)
    return pooled.quantile(0.99)


def check_slots(answer: int | None) -> Verdict:
    """Right when ``answer`` slots keep the pooled p99 TTFT within :data:`TTFT_TARGET` and
    one fewer does not."""
    count = whole(answer)
    if count is None or not 1 <= count <= MAX_SLOTS:
        return wrong_kind(answer, f"a whole number of slots from 1 to {MAX_SLOTS} (for example answer = 12)")
    answer = count
    load = offered_load()
    if answer <= load:
        return Verdict(False, f"{answer} slots are too few: {SLOTS_RATE:g} requests a second of {load / SLOTS_RATE:.2f} s "
                              f"each keep {load:.2f} slots busy on average, so the queue would grow without end")
    p99 = ttft_p99(answer)
    if p99 > TTFT_TARGET:
        return Verdict(False, f"{answer} slots are too few: p99 TTFT {p99:.2f} s over {len(SLOTS_SEEDS)} seeds, above the "
                              f"{TTFT_TARGET:g} s target (with {load:.2f} slots busy on average, "
                              f"{answer - load:.2f} spare is not enough)")
    fewer = ttft_p99(answer - 1)
    if fewer <= TTFT_TARGET:
        return Verdict(False, f"{answer} slots meet the target (p99 TTFT {p99:.2f} s), but so do {answer - 1} "
                              f"(p99 {fewer:.2f} s): more slots than needed cost money; look for the least")
    return Verdict(True, f"{answer} slots: p99 TTFT {p99:.2f} s, within {TTFT_TARGET:g} s over {len(SLOTS_SEEDS)} "
                         f"seeds; {answer - 1} give {fewer:.2f} s. {load:.2f} slots are busy on average: "
                         f"{answer - load:.2f} spare ones absorb the bursts")


# -- exercise 1: what a limit in requests lets through in tokens ----------------------------

RPM_LIMIT = 600
"""The limit of exercise 1, in requests per minute."""
MIX_LONG_SHARE = 0.2
"""The share of long generations in ``scenarios/llm_mix.toml``."""
HEAVY_LONG_SHARE = 0.5
"""The share of long generations in the other mix of exercise 1."""
MAX_TOKENS = 2000
"""Every request's max_tokens in ``scenarios/llm_mix.toml``."""
TOKENS_TOLERANCE = 0.03
"""Relative error allowed on each number of tokens per minute."""
CHAT = config.ProviderConfig(name="chat", output_tokens=150.0, output_distribution="lognormal", output_p99=800.0)
"""The chat provider's output lengths in ``scenarios/llm_mix.toml``."""
LONG = config.ProviderConfig(name="long", output_tokens=1000.0, output_distribution="lognormal", output_p99=4000.0)
"""The long-generation provider's output lengths in ``scenarios/llm_mix.toml``."""


def mix_scenario(long_share: float = MIX_LONG_SHARE, rate: float = RPM_LIMIT / 60) -> dict[str, Any]:
    """``scenarios/llm_mix.toml`` without its failures and with room for any traffic (no
    capacity limit), ``long_share`` of the requests sent to the long provider and open-loop
    traffic at ``rate`` per second (the limit's)."""
    mix = config.load(config_path("llm_mix")).to_dict()
    room = {"error_rate": 0.0, "stream_error_rate": 0.0, "capacity": 0, "queue": 0}
    mix["providers"]["chat"].update(weight=100 * (1 - long_share), **room)
    mix["providers"]["long"].update(weight=100 * long_share, **room)
    mix["workload"]["rate"] = rate
    mix["limiter"] = {"rate": rate, "burst": max(1.0, rate * 60)}
    return mix


def config_path(name: str):
    """The path of ``scenarios/NAME.toml`` in the repository."""
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "scenarios" / f"{name}.toml"


def tokens_per_minute(long_share: float) -> float:
    """The expected output tokens per minute at :data:`RPM_LIMIT` with ``long_share`` long generations."""
    mean = ((1 - long_share) * mean_output_tokens(CHAT, MAX_TOKENS)
            + long_share * mean_output_tokens(LONG, MAX_TOKENS))
    return RPM_LIMIT * mean


def _tokens_mistakes(long_share: float) -> list[tuple[float, str]]:
    def both(chat: float, long: float) -> float:
        return RPM_LIMIT * ((1 - long_share) * chat + long_share * long)

    return [
        (both(CHAT.output_tokens, LONG.output_tokens),
         "that multiplies the medians: a log-normal's mean is above its median, e^(σ²/2) times it"),
        (both(mean_output_tokens(CHAT), mean_output_tokens(LONG)),
         f"that leaves out max_tokens = {MAX_TOKENS}: it cuts {_capped_share(LONG):.0%} of the long answers short"),
        (tokens_per_minute(long_share) / 60, "that is per second: a minute holds 60 of them"),
    ]


def _capped_share(provider: config.ProviderConfig) -> float:
    sigma = lognormal_sigma(provider.output_tokens, provider.output_p99)
    return 1 - _NORMAL.cdf(math.log(MAX_TOKENS / provider.output_tokens) / sigma)


def check_tokens_per_minute(answer: Mapping[str, float] | None) -> Verdict:
    """Right when ``answer["mix"]`` and ``answer["long_heavy"]`` are both within
    :data:`TOKENS_TOLERANCE` of the expected tokens per minute at :data:`RPM_LIMIT`."""
    keys = ("mix", "long_heavy")
    if not isinstance(answer, Mapping) or set(answer) != set(keys):
        return wrong_kind(answer, "a dict with two numbers of tokens per minute, {'mix': ..., 'long_heavy': ...}")
    given = {k: number(answer[k]) for k in keys}
    for key in keys:
        if given[key] is None:
            return Verdict(False, f"answer['{key}'] = {shown(answer[key])}: expected a number of tokens per minute")
    wrong = []
    for key, share in (("mix", MIX_LONG_SHARE), ("long_heavy", HEAVY_LONG_SHARE)):
        want, got = tokens_per_minute(share), given[key]
        if abs(got - want) / want > TOKENS_TOLERANCE:
            hint = known_mistake(got, _tokens_mistakes(share), TOKENS_TOLERANCE * abs(got)) or (
                f"{RPM_LIMIT} requests a minute times the mean output of one, "
                f"{1 - share:.0%} chat and {share:.0%} long, each cut at {MAX_TOKENS} tokens")
            wrong.append(f"{key} ({share:.0%} long): {got:,.6g} tokens a minute is "
                         f"{direction(got, want)} by {off_by(got, want)}: {hint}")
    if wrong:
        return Verdict(False, "; ".join(wrong) + ".")
    mix, heavy = tokens_per_minute(MIX_LONG_SHARE), tokens_per_minute(HEAVY_LONG_SHARE)
    return Verdict(True, f"{RPM_LIMIT} requests a minute let through {mix:,.0f} tokens a minute with "
                         f"{MIX_LONG_SHARE:.0%} long generations and {heavy:,.0f} with {HEAVY_LONG_SHARE:.0%}: "
                         f"{heavy / mix:.2f} times the work for the same requests. A limit of {mix:,.0f} tokens a "
                         f"minute would hold the work steady and admit {RPM_LIMIT * mix / heavy:.0f} requests a "
                         "minute of the heavier mix")
