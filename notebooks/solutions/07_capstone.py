# 1. p3's 1.5 s latency sets p99 as long as p3 gets more than 1% of the traffic: weight 0
#    (it stays available as the last-resort fallback).
# 2. During the brownout 30% of p1's calls fail. Three failures in a row come up 2.7% of the
#    time (0.3 ** 3), so with the default threshold p1 keeps serving bad calls for a while;
#    two in a row come up 9% of the time: failure_threshold = 2 opens the breaker much sooner.
# 3. 70% of probes succeed and a success resets the backoff, so p1 keeps coming back. A base
#    delay of 3 s keeps it out three times longer after each opening.
# 4. The default max_cooldown of 30 s is kept: two or three openings in a row reach 12 s,
#    which is short enough for p1 to be back soon after the brownout and keep the median.
answer = {
    "providers": {"p3": {"weight": 0}},
    "breaker": {"failure_threshold": 2, "base_delay": 3.0},
}
