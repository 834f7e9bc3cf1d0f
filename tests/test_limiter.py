"""TokenBucket: exact token counts, retry times and long-run admissions, driven by ``now``."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gwlab.config import BURST, RATE
from gwlab.limiter import (MAX_PER_MINUTE, MINUTE_UNIT, PerMinuteBucket, TokenBucket, micros, retry_after_header,
                           retry_after_ms_header)


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


# -- n tokens at once, refunds and debt (the tokens-per-minute limit) -------------------------


def test_take_takes_n_tokens_or_nothing():
    bucket = TokenBucket(rate=4, burst=10)
    assert bucket.take(0.0, 7)
    assert bucket.tokens(0.0) == 3.0
    assert not bucket.take(0.0, 4)  # 3 left: nothing is taken
    assert bucket.tokens(0.0) == 3.0
    assert bucket.retry_after_us(0.0, 4) == 250_000  # one more token at 4/s
    assert bucket.take(0.25, 4)
    assert bucket.tokens(0.25) == 0.0


def test_a_refund_gives_back_up_to_the_capacity_and_no_more():
    bucket = TokenBucket(rate=1, burst=10)
    assert bucket.take(0.0, 8)
    bucket.refund(0.0, 5)
    assert bucket.tokens(0.0) == 7.0
    bucket.refund(1.0, 5)  # 8 after a second's refill: 13 would be above the capacity
    assert bucket.tokens(1.0) == 10.0


def test_debt_takes_the_level_below_zero_and_it_refills_from_there():
    bucket = TokenBucket(rate=2, burst=10)
    assert bucket.take(0.0, 10)
    bucket.charge(0.0, 3)  # three tokens used beyond the reservation
    assert bucket.level(0.0) == -3.0 and bucket.tokens(0.0) == 0.0
    assert bucket.retry_after_us(0.0) == 2_000_000  # 4 tokens at 2/s before one is whole
    assert bucket.level(1.5) == 0.0
    assert not bucket.try_acquire(1.999)
    assert bucket.try_acquire(2.0)


def test_debt_is_recorded_down_to_two_to_the_53_units():
    bucket = PerMinuteBucket(MAX_PER_MINUTE)
    bucket.charge(0.0, 2 * MAX_PER_MINUTE)  # down to -150 million tokens: recorded
    assert bucket.level(0.0) == -MAX_PER_MINUTE
    bucket.charge(0.0, 1_000_000)  # 2**53 units is 150,119,987.6 tokens
    assert bucket.level(0.0) == -2**53 / MINUTE_UNIT
    bucket.refund(0.0, 1)
    assert bucket.level(0.0) * MINUTE_UNIT == -2**53 + MINUTE_UNIT


@pytest.mark.parametrize(("n", "due_us"), [(1, 60_000), (2, 120_000), (1000, 60_000_000)])
def test_a_per_minute_bucket_refills_at_exactly_its_limit_per_minute(n, due_us):
    # 1000 tokens a minute is 16.666... a second: no thousandth of a token per second holds it.
    bucket = PerMinuteBucket(1000)
    assert (bucket.limit, bucket.burst, bucket.rate) == (1000, 1000.0, 1000 / 60)
    assert bucket.take(0.0, 1000)
    assert bucket.retry_after_us(0.0, n) == due_us
    assert not bucket.take((due_us - 2) / 1e6, n)  # a whole microsecond early
    assert bucket.take(due_us / 1e6, n)


def test_a_client_taking_n_tokens_at_exactly_the_per_minute_rate_is_never_refused():
    for limit, n in ((7, 1), (1000, 3), (60_001, 17), (MAX_PER_MINUTE, 4096)):
        bucket = PerMinuteBucket(limit)
        assert bucket.take(0.0, limit)
        assert all(bucket.take(k * n * 60 / limit, n) for k in range(1, 2000)), (limit, n)


@pytest.mark.parametrize("limit", [0, -1, 1.0, 2.5, True, MAX_PER_MINUTE + 1, float("nan")])
def test_a_per_minute_limit_is_a_whole_number_in_range(limit):
    with pytest.raises(ValueError, match="1 <= limit <= 150000000"):
        PerMinuteBucket(limit)


def test_configure_a_per_minute_bucket_settles_then_clamps_and_keeps_debt():
    bucket = PerMinuteBucket(600)  # 10 tokens a second
    assert bucket.take(0.0, 600)
    bucket.charge(0.0, 100)
    bucket.configure(5.0, 60)  # -100 + 50 at the old limit, then 1 a second
    assert bucket.level(5.0) == -50.0
    assert bucket.level(6.0) == -49.0
    bucket.configure(6.0, 6000)
    assert bucket.level(6.0) == -49.0 and bucket.level(106.0) == 6000.0
    with pytest.raises(ValueError):
        bucket.configure(6.0, 0)
    assert bucket.limit == 6000


@pytest.mark.parametrize(
    ("rate", "burst", "taken", "now", "status"),
    [
        (10, 100, 0, 0.0, (100, 0)),  # full
        (10, 100, 1, 0.0, (99, 100_000)),
        (10, 100, 100, 0.0, (0, 10_000_000)),
        (10, 100, 100, 0.05, (0, 9_950_000)),  # half a token: 0 whole ones
        (3, 1, 1, 0.0, (0, 333_334)),  # rounded up
        (1, 1.5, 1, 0.0, (0, 1_000_000)),  # half a token left shows as 0
        (1e6, 1e6, 1, 0.0, (999_999, 1)),
    ],
)
def test_status_is_the_whole_tokens_left_and_the_wait_until_full(rate, burst, taken, now, status):
    bucket = TokenBucket(rate, burst)
    assert bucket.take(0.0, taken) if taken else True
    assert bucket.status(now) == status


def test_status_of_a_bucket_in_debt_counts_the_debt_in_its_wait():
    bucket = PerMinuteBucket(60)
    assert bucket.take(0.0, 60)
    bucket.charge(0.0, 30)
    assert bucket.status(0.0) == (0, 90_000_000)
    assert bucket.status(90.0) == (60, 0)


# -- properties of n-token takes, refunds and debt, against an integer model -----------------


class Model:
    """The bucket's rules in Python's integers, with no float anywhere: what the bucket
    must equal, unit for unit, after every step."""

    def __init__(self, unit: int, earn: int, cap: int) -> None:
        self.unit, self.earn, self.cap = unit, earn, cap
        self.level, self.stamp = cap, 0

    def settle(self, t: int) -> None:
        if t > self.stamp:
            self.level = min(self.cap, self.level + (t - self.stamp) * self.earn)
            self.stamp = t

    def take(self, t: int, n: int) -> bool:
        self.settle(t)
        if self.level >= n * self.unit - self.earn + 1:
            self.level -= n * self.unit
            return True
        return False

    def refund(self, t: int, n: int) -> None:
        self.settle(t)
        self.level = min(self.cap, self.level + n * self.unit)

    def charge(self, t: int, n: int) -> None:
        self.settle(t)
        self.level -= n * self.unit


def buckets():
    """A per-second bucket (rate and burst as quantised) or a per-minute one, with its
    integer model."""
    per_second = st.builds(lambda milli, nano: (TokenBucket(milli / 1000, nano / 1e9), Model(10**9, milli, nano)),
                           st.integers(1, 10**9), st.integers(10**9, 10**12))
    per_minute = st.integers(1, MAX_PER_MINUTE).map(
        lambda limit: (PerMinuteBucket(limit), Model(60_000_000, limit, limit * 60_000_000)))
    return st.one_of(per_second, per_minute)


steps = st.lists(st.tuples(st.integers(0, 5_000_000), st.sampled_from(["take", "refund", "charge"]),
                           st.integers(1, 5000)), min_size=1, max_size=200)


@settings(max_examples=400, deadline=None)
@given(buckets(), steps)
def test_property_takes_refunds_and_debt_are_exact_unit_for_unit(pair, script):
    bucket, model = pair
    t = 0
    for gap, op, n in script:
        t += gap
        now = t / 1e6
        if op == "take":
            assert bucket.take(now, n) == model.take(t, n)
        else:
            getattr(bucket, op)(now, n)
            getattr(model, op)(t, n)
        assert bucket._level == model.level  # nothing rounded, created or lost
        assert bucket.tokens(now) == max(0, model.level) / model.unit


@settings(max_examples=400, deadline=None)
@given(buckets(), steps, st.integers(0, 10_000_000))
def test_property_status_is_the_models_whole_tokens_and_wait_until_full_and_changes_nothing(pair, script, later):
    """Between any two operations, and after them: status tells the model's whole tokens
    (none in debt) and the exact microseconds until it is full, and the bucket goes on as
    the model does."""
    bucket, model = pair
    t = 0
    for gap, op, n in [*script, (later, "status", 0)]:
        t += gap
        model.settle(t)
        whole = max(0, model.level) // model.unit
        wait = 0 if model.level >= model.cap else -((model.level - model.cap) // model.earn)
        assert bucket.status(t / 1e6) == (whole, wait)
        assert bucket._level == model.level
        if op != "status":
            getattr(bucket, op)(t / 1e6, n)
            getattr(model, op)(t, n)


@settings(max_examples=400, deadline=None)
@given(buckets(), steps)
def test_property_net_usage_up_to_any_admission_is_at_most_the_level_plus_rate_times_elapsed(pair, script):
    """From the start of any window to any admission in it, tokens taken, less those
    refunded, plus those charged, are at most the level at the window's start (at most the
    capacity) plus rate × T, and less than a microsecond's refill more (the tolerance)."""
    bucket, model = pair
    t, marks = 0, []  # (time, level, net usage so far) at the start of each step
    net = 0
    for gap, op, n in script:
        t += gap
        model.settle(t)
        marks.append((t, model.level, net))
        level = model.level
        if op == "take":
            if not bucket.take(t / 1e6, n):
                continue
            net += n * model.unit
            for start, start_level, start_net in marks:
                assert start_level <= model.cap
                assert net - start_net <= start_level + model.earn * (t - start) + model.earn - 1
        elif op == "refund":
            bucket.refund(t / 1e6, n)
            net -= min(model.cap, level + n * model.unit) - level  # what actually went back
        else:
            bucket.charge(t / 1e6, n)
            net += n * model.unit
        getattr(model, op)(t, n)


@settings(max_examples=300, deadline=None)
@given(buckets(), steps, st.integers(1, 10_000))
def test_property_taking_n_at_once_is_taking_one_n_times(pair, script, n):
    bucket, _ = pair
    twin = TokenBucket.__new__(type(bucket))
    for name in ("rate", "burst", "_unit", "_earn", "_cap", "_whole", "_due", "_level", "_stamp"):
        setattr(twin, name, getattr(bucket, name))
    t = 0
    for gap, _, m in script:
        t += gap
        bucket.take(t / 1e6, m)
        twin.take(t / 1e6, m)
    now = t / 1e6
    assume(n <= bucket.burst)
    took = bucket.take(now, n)
    singles = [twin.try_acquire(now) for _ in range(n)]
    # One at a time, the first refusal ends the run: n at once is all of them or none.
    assert took == all(singles)
    if took:
        assert bucket._level == twin._level


@settings(max_examples=300, deadline=None)
@given(buckets(), steps, st.integers(1, 10_000), st.floats(0, 100, allow_subnormal=False))
def test_property_a_client_that_waits_the_advertised_time_gets_its_n_tokens(pair, script, n, later):
    bucket, _ = pair
    assume(n <= bucket.burst)
    t = 0
    for gap, op, m in script:
        t += gap
        getattr(bucket, op)(t / 1e6, m)
    now = t / 1e6 + later
    wait = bucket.retry_after_us(now, n)
    if wait:
        assert not bucket.take(now, n)
        assert bucket.take(now + wait / 1e6, n)
    else:
        assert bucket.take(now, n)
