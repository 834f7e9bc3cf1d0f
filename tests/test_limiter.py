"""TokenBucket: exact token counts, retry times and long-run admissions, driven by ``now``."""

from __future__ import annotations

import pytest

from gwlab.config import BURST, RATE
from gwlab.limiter import TokenBucket, retry_after_header


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


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0.5), (float("nan"), 1)])
def test_rejects_bad_parameters(rate, burst):
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(rate, burst)
