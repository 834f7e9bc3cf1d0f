# 1. p3's 1.5 s latency sets p99 as long as p3 gets more than 1% of the traffic: weight 0
#    (it stays available as the last-resort fallback).
# 2. The median is p1's 0.1 s only while p1's fast answers are more than half of all requests.
#    p1 is shut out for most of the 40 s brownout, so in the other 80 s it must answer more
#    than three quarters of the traffic, and be back soon after the brownout: 70 / (70 + 20) =
#    78% leaves no room, and on many seeds the median falls to p2's 0.4 s. A weight of 1000
#    gives p1 98% of the traffic while it is healthy; p2 stays the backup.
# 3. During the brownout 30% of p1's calls fail. Three failures in a row come up 2.7% of the
#    time (0.3 ** 3), two in a row 9%: failure_threshold = 2 opens the breaker much sooner.
#    Outside the brownout p1 fails 0.2% of its calls, and two in a row stay rare.
# 4. 70% of probes succeed and a success resets the backoff, so p1 keeps coming back during
#    the brownout, and each return lets slow and failing calls through. A base delay of 5 s
#    keeps it out 5 s after each opening: fewer returns, availability above 99%.
# 5. max_cooldown = 10 s: after the brownout p1 waits at most 10 s for its next probe, which
#    keeps its share of the requests, and the median, on every seed.
answer = {
    "providers": {"p1": {"weight": 1000}, "p3": {"weight": 0}},
    "breaker": {"failure_threshold": 2, "base_delay": 5.0, "max_cooldown": 10.0},
}
