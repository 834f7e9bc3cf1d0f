"""TokenBucket: exact token counts, retry times and long-run admissions, driven by ``now``."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gwlab.config import BURST, RATE
from gwlab.limiter import TokenBucket, micros, retry_after_header, retry_after_ms_header


def drain(bucket: TokenBucket, now: float) -> int:
    """Take every whole token available at ``now``; return how many."""
    taken = 0
    while bucket.try_acquire(now):
        taken += 1
    return taken


def test_starts_full_with_burst_tokens():
    bucket = TokenBucket(rate=10, burst=5, now=3.0)
    assert bucket.tokens(3.0) == 5.0
    assert drain(bucket, 3.0) == 5
    assert bucket.tokens(3.0) == 0.0


def test_default_bucket_admits_a_burst_of_exactly_burst():
    bucket = TokenBucket(RATE, BURST)
    assert drain(bucket, 0.0) == 1000


def test_refill_is_linear_and_capped_at_burst():
    bucket = TokenBucket(rate=4, burst=8)
    assert drain(bucket, 0.0) == 8
    assert bucket.tokens(0.25) == 1.0
    assert bucket.tokens(0.5) == 2.0
    assert bucket.tokens(1.75) == 7.0
    assert bucket.tokens(2.0) == 8.0
    assert bucket.tokens(100.0) == 8.0


def test_fractional_tokens_do_not_admit():
    bucket = TokenBucket(rate=4, burst=2)
    drain(bucket, 0.0)
    assert not bucket.try_acquire(0.125)  # 0.5 tokens
    assert bucket.tokens(0.125) == 0.5
    assert bucket.try_acquire(0.25)  # 1.0 token
    assert bucket.tokens(0.25) == 0.0


def test_retry_after_is_time_to_one_token():
    bucket = TokenBucket(rate=4, burst=2)
    assert bucket.retry_after(0.0) == 0.0
    drain(bucket, 0.0)
    assert bucket.retry_after(0.0) == 0.25
    assert bucket.retry_after(0.125) == 0.125
    assert bucket.retry_after(0.25) == 0.0


def test_drained_slow_bucket_waits_two_seconds():
    bucket = TokenBucket(rate=0.5, burst=2)
    assert drain(bucket, 0.0) == 2
    assert bucket.retry_after(0.0) == 2.0
    assert retry_after_header(bucket.retry_after(0.0)) == "2"
    assert bucket.retry_after(1.5) == 0.5
    assert retry_after_header(bucket.retry_after(1.5)) == "1"


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.0, "1"), (0.001, "1"), (0.999, "1"), (1.0, "1"), (1.0001, "2"), (2.0, "2"), (2.5, "3"), (59.01, "60")],
)
def test_retry_after_header_rounds_up_to_at_least_one_second(seconds, header):
    assert retry_after_header(seconds) == header


def offer(bucket: TokenBucket, per_tick: int, step: float, duration: float) -> tuple[int, int]:
    """Send ``per_tick`` requests at 0, step, ..., duration; return (offered, admitted)."""
    ticks = round(duration / step)
    admitted = sum(bucket.try_acquire(i * step) for i in range(ticks + 1) for _ in range(per_tick))
    return (ticks + 1) * per_tick, admitted


@pytest.mark.parametrize(
    ("rate", "burst", "per_tick", "step", "duration"),
    [
        (1000.0, 1000.0, 2, 0.001, 10.0),  # the seed's bucket at twice its rate
        (1000.0, 1000.0, 1, 0.0001, 2.0),  # ten times its rate
        (100.0, 10.0, 1, 0.001, 5.0),  # small burst
        (7.0, 3.0, 1, 0.01, 20.0),  # a rate that does not divide the step
        (0.5, 2.0, 1, 0.1, 30.0),  # slower than one token per second
        (1000.0, 50.0, 25, 0.01, 3.0),  # requests in clumps
    ],
)
def test_overload_admits_burst_plus_rate_times_duration(rate, burst, per_tick, step, duration):
    offered, admitted = offer(TokenBucket(rate, burst), per_tick, step, duration)
    assert offered > burst + rate * duration + 1  # really overloaded
    assert abs(admitted - (burst + rate * duration)) <= 1


def test_load_at_exactly_the_rate_is_never_limited():
    # One request per millisecond against 1000 tokens/s: every request finds a token,
    # the burst is never touched.
    bucket = TokenBucket(RATE, BURST)
    assert offer(bucket, 1, 0.001, 10.0) == (10001, 10001)
    # Each tick refills the token the previous request took; the last one just left.
    assert bucket.tokens(10.0) == pytest.approx(BURST - 1, abs=1e-6)


def test_configure_settles_at_old_rate_then_clamps_to_new_burst():
    bucket = TokenBucket(rate=8, burst=8)
    drain(bucket, 0.0)
    # Up to 0.25 s the bucket earns 2 tokens at the old rate; the new rate applies after.
    bucket.configure(0.25, rate=64, burst=4)
    assert bucket.tokens(0.25) == 2.0
    assert bucket.tokens(0.25 + 1 / 64) == 3.0
    assert bucket.tokens(1.0) == 4.0


def test_configure_smaller_burst_clamps_a_full_bucket():
    bucket = TokenBucket(rate=8, burst=8)
    bucket.configure(1.0, burst=3)
    assert bucket.tokens(1.0) == 3.0
    assert bucket.rate == 8.0
    assert drain(bucket, 1.0) == 3


def test_configure_larger_burst_keeps_level_and_refills_to_new_cap():
    bucket = TokenBucket(rate=8, burst=2)
    bucket.configure(0.0, burst=6)
    assert bucket.tokens(0.0) == 2.0
    assert bucket.tokens(0.25) == 4.0
    assert bucket.tokens(10.0) == 6.0


def test_configure_rate_only_counts_earlier_time_at_old_rate():
    bucket = TokenBucket(rate=2, burst=100)
    drain(bucket, 0.0)
    bucket.configure(1.0, rate=10)  # 2 tokens earned at the old rate
    assert bucket.tokens(1.5) == 7.0  # plus 0.5 s at 10/s


def test_clock_stepping_back_never_removes_tokens():
    bucket = TokenBucket(rate=4, burst=8)
    drain(bucket, 0.0)
    assert bucket.tokens(1.0) == 4.0
    assert bucket.tokens(0.5) == 4.0
    assert bucket.try_acquire(0.25)
    assert bucket.tokens(0.0) == 3.0
    # Time before the latest ``now`` seen earns nothing twice.
    assert bucket.tokens(1.0) == 3.0
    assert bucket.tokens(1.25) == 4.0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, 1), (-1, 1), (0.0004, 1), (1, 0.5), (float("nan"), 1), (float("inf"), 1), (1, float("inf")),
     (1e6 + 1, 1), (1, 1e6 + 1), (1e-310, 1)],
)
def test_rejects_parameters_outside_the_exact_range(rate, burst):
    with pytest.raises(ValueError, match=r"0\.001 <= rate <= 1e\+06 and 1 <= burst <= 1e\+06"):
        TokenBucket(rate, burst)


def test_configure_refuses_a_bad_rate_and_changes_nothing():
    bucket, twin = TokenBucket(rate=4, burst=2), TokenBucket(rate=4, burst=2)
    drain(bucket, 0.0), drain(twin, 0.0)
    with pytest.raises(ValueError):
        bucket.configure(0.125, rate=0)
    assert (bucket.rate, bucket.burst) == (4.0, 2.0)
    assert [bucket.tokens(0.3), bucket.retry_after_us(0.3)] == [twin.tokens(0.3), twin.retry_after_us(0.3)]


@pytest.mark.parametrize(("rate", "quantised"), [(1.0004, 1.0), (1.0006, 1.001), (0.001, 0.001), (333.3333, 333.333)])
def test_rates_are_quantised_to_a_thousandth(rate, quantised):
    assert TokenBucket(rate, 1).rate == quantised


# -- exactness: the issue "Exact and never stuck", section 1 ----------------------------------


def exact_rate_refusals(rate: float, burst: float, sends: int) -> int:
    """Refusals met by a client sending at exactly ``rate``: at ``k / rate`` for each k
    (computed per k, not as a running sum)."""
    bucket = TokenBucket(rate, burst)
    return sum(not bucket.try_acquire(k / rate) for k in range(sends))


def test_a_client_at_exactly_the_rate_is_never_refused():
    bucket = TokenBucket(rate=10, burst=1)
    assert [bucket.try_acquire(k / 10) for k in range(8)] == [True] * 8
    assert exact_rate_refusals(10, 1, 2000) == 0


@pytest.mark.parametrize("rate", [0.001, 0.003, 0.5, 1.024, 3, 7, 10, 333.333, 999.999, 1000, 1024, 4096.5, 1e6])
@pytest.mark.parametrize("burst", [1, 1.5, 2, 1000])
def test_exact_rate_senders_are_never_refused(rate, burst):
    # 1.024/s puts every due time on an exact half microsecond, the tolerance's edge.
    assert exact_rate_refusals(rate, burst, 3000) == 0


def test_a_sender_half_a_microsecond_early_is_on_time_and_one_microsecond_early_is_not():
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.try_acquire(0.0)
    assert not bucket.try_acquire(1.0 - 1e-6)  # a whole microsecond early
    assert bucket.try_acquire(1.0 - 0.5e-6)  # within the clock's half microsecond
    # Taken early, the token is owed: the next one is due at 2 s all the same.
    assert not bucket.try_acquire(2.0 - 1e-6)
    assert bucket.try_acquire(2.0)


@pytest.mark.parametrize(
    ("rate", "burst", "now", "wait_us"),
    [
        (4, 2, 0.0, 250_000),
        (3, 1, 0.0, 333_334),  # 333,333.33 us, rounded up
        (3, 1, 0.1, 233_334),
        (1e6, 1, 0.0, 1),  # the next token is one microsecond away
        (0.001, 1, 0.0, 1_000_000_000),
        (7, 1, 0.0000004, 142_857),  # now 0.4 us past its microsecond: due 142,857.14 us later
    ],
)
def test_retry_after_is_the_exact_wait_rounded_up_to_a_microsecond(rate, burst, now, wait_us):
    bucket = TokenBucket(rate, burst)
    drain(bucket, 0.0)
    assert bucket.retry_after_us(now) == wait_us
    assert bucket.retry_after(now) == wait_us / 1e6
    # A whole microsecond before the token is due is too early; the advertised wait is not.
    assert not bucket.try_acquire(now + (wait_us - 2) / 1e6)
    assert bucket.try_acquire(now + wait_us / 1e6)


def test_retry_after_is_never_a_wait_that_does_not_move_the_clock():
    # The float level of the old bucket left 1e-17 s here; the integer bucket waits 1 us.
    bucket = TokenBucket(rate=3, burst=1)
    drain(bucket, 0.0)
    now = 1 / 3
    assert not bucket.try_acquire(now - 1e-6)
    wait = bucket.retry_after(now - 1e-6)
    assert wait >= 1e-6 and bucket.try_acquire(now - 1e-6 + wait)


@pytest.mark.parametrize(
    ("wait_us", "header"),
    [(1, "0.001"), (999, "0.999"), (1000, "1"), (1001, "1.001"), (1010, "1.01"), (333_334, "333.334"),
     (2_000_000, "2000")],
)
def test_retry_after_ms_header_is_exact(wait_us, header):
    assert retry_after_ms_header(wait_us) == header
    assert round(float(header) * 1000) == wait_us


# -- properties -------------------------------------------------------------------------------

rates = st.integers(1, 10**9).map(lambda milli: milli / 1000)
bursts = st.integers(10**9, 10**12).map(lambda nano: nano / 1e9)
times = st.lists(st.integers(0, 10**8), min_size=1, max_size=300).map(lambda us: sorted(u / 1e6 for u in us))


@settings(max_examples=300, deadline=None)
@given(rates, bursts, st.integers(1, 3000))
def test_property_exact_rate_senders_are_never_refused(rate, burst, sends):
    # Exact for the first few million sends whatever the rate: k / rate in floats is then
    # within 1e-7 us of its true time, far inside the clock's tolerance.
    assert exact_rate_refusals(rate, burst, sends) == 0


@settings(max_examples=300, deadline=None)
@given(rates, bursts, times)
def test_property_admissions_never_exceed_burst_plus_rate_times_elapsed(rate, burst, arrivals):
    bucket = TokenBucket(rate, burst)
    admitted = 0
    for t in arrivals:
        admitted += bucket.try_acquire(t)
        # The clock's tolerance lends less than a microsecond of refill: under one token.
        assert admitted < bucket.burst + bucket.rate * t + 1


@settings(max_examples=300, deadline=None)
@given(rates, bursts, st.floats(0, 1000), st.floats(0.001, 100))
def test_property_overload_admits_burst_plus_rate_times_duration(rate, burst, start, duration):
    # The densest useful overload: a client that retries the moment the bucket says it may.
    # Those moments are whole microseconds, up to one after a token is due; a bucket that
    # cannot hold that microsecond's refill beyond one token (burst < 1 + rate * 1 us) drops
    # it at every admission, as any token bucket does with late arrivals: left out here.
    assume(burst - 1 >= rate * 1e-6)
    bucket = TokenBucket(rate, burst, now=start)
    duration = min(duration, 5_000 / bucket.rate)
    end, t, admitted = start + duration, start, 0
    while t <= end:
        if bucket.try_acquire(t):
            admitted += 1
        else:
            t += bucket.retry_after(t)
    # The law, to within one token: the token due exactly at the end may fall either side
    # of it in the client's float clock.
    expected = bucket.burst + bucket.rate * duration
    assert math.floor(expected) - 1 <= admitted <= expected + 1


@settings(max_examples=500, deadline=None)
@given(rates, bursts, times, st.floats(0, 200, allow_subnormal=False))
def test_property_a_lone_client_that_waits_the_advertised_time_is_admitted(rate, burst, history, now):
    bucket = TokenBucket(rate, burst)
    for t in history:
        bucket.try_acquire(t)
    now = max(now, history[-1])
    while bucket.try_acquire(now):
        pass
    wait = bucket.retry_after(now)
    assert wait >= 1e-6 and now + wait > now
    # The header's milliseconds hold the same whole microseconds.
    assert round(float(retry_after_ms_header(bucket.retry_after_us(now))) * 1000) == bucket.retry_after_us(now)
    assert bucket.try_acquire(now + wait)


@settings(max_examples=300, deadline=None)
@given(rates, bursts, rates, bursts, st.floats(0, 50), st.floats(0, 50))
def test_property_configure_settles_at_the_old_rate_then_clamps(rate, burst, new_rate, new_burst, at, later):
    bucket = TokenBucket(rate, burst)
    drain(bucket, 0.0)
    old_rate, before = bucket.rate, bucket.tokens(at)
    bucket.configure(at, new_rate, new_burst)
    assert bucket.tokens(at) == min(before, bucket.burst)
    grown = bucket.tokens(at + later)
    elapsed = (micros(at + later) - micros(at)) / 1e6  # in the bucket's whole microseconds
    expected = min(bucket.burst, min(before, bucket.burst) + bucket.rate * elapsed)
    # The drain may have taken its last token within the clock's tolerance: that token is
    # owed, at most what a microsecond earns at the old rate, and is refilled first.
    slack = 1e-12 * max(1.0, expected)
    assert expected - old_rate * 1e-6 - slack <= grown <= expected + slack
