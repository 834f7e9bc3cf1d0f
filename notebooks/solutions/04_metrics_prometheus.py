# Exercise 1: PromQL's histogram_quantile. Find the first bucket whose cumulative count reaches
# the rank q * total and interpolate linearly between its lower bound (the previous le, or 0)
# and its upper bound. A rank in the +Inf bucket has nothing to interpolate to: answer the
# highest finite le.
import math


def histogram_quantile(q, buckets):
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == math.inf:
                return lower
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    return lower


# Exercise 2: a counter's increase across restarts. Between two scrapes a counter either grew
# (count the difference) or dropped, which means it restarted from 0 (count its new value).
def increase(samples):
    gained = 0.0
    for (_, before), (_, after) in zip(samples, samples[1:]):
        gained += after - before if after >= before else after
    return gained


answer = histogram_quantile  # for the first check cell; set answer = increase for the second
