# Exercise 1: a replica holding k of the 8 connections is offered 12.5 k requests a second and
# admits at most 25 of them, two connections' worth: min(k, 2) connections. Each connection
# lands on a given replica with probability 1/4, independently, so k is Binomial(8, 1/4), and
# the share admitted is the mean of min(k, 2) over the 2 connections' worth a replica could
# serve. An even spread (k = 2 everywhere) would admit everything; chance piles 3 or more on
# some replicas (they refuse the excess) and leaves others with fewer (their limit goes unused).
from math import comb

split_answer = sum(comb(8, k) * 0.25**k * 0.75 ** (8 - k) * min(k, 2) for k in range(9)) / 2


# Exercise 2: the first call fails at 0 and the gateway leaves Redis alone for 0.1 s; each
# failure in a row doubles the wait, up to 2 s. So it tries at 0, 0.1, 0.3, 0.7, 1.5, 3.1, 5.1,
# 7.1, ... s, and the first try at or after the outage's end finds Redis back.
def reconnect_answer(outage):
    at, wait = 0.0, 0.1
    while at < outage:
        at += wait
        wait = min(2.0, 2 * wait)
    return at


split_answer, reconnect_answer(5.0)
