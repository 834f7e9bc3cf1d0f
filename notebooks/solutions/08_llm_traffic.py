import math
from statistics import NormalDist

# Exercise 1: tokens a minute = 600 requests × the mean output of one. A log-normal of median
# m and p99 q has σ = ln(q / m) / 2.326 and mean m e^(σ²/2); max_tokens = 2000 cuts it, and
# E[min(X, 2000)] = mean Φ((ln 2000 − ln m − σ²) / σ) + 2000 (1 − Φ((ln 2000 − ln m) / σ)).


def capped_mean(median, p99, cap=2000):
    sigma = math.log(p99 / median) / NormalDist().inv_cdf(0.99)
    mean = median * math.exp(sigma**2 / 2)
    z = (math.log(cap) - math.log(median)) / sigma
    return mean * NormalDist().cdf(z - sigma) + cap * (1 - NormalDist().cdf(z))


chat, long = capped_mean(150, 800), capped_mean(1000, 4000)  # 194 and 1098 tokens
tokens_answer = {"mix": 600 * (0.8 * chat + 0.2 * long),        # 225,000 tokens a minute
                 "long_heavy": 600 * (0.5 * chat + 0.5 * long)}  # 388,000: 1.72 times as many

# Exercise 2: an M/M/c provider. Calls of 4 s on average serve at μ = 1/4 per second; at
# λ = 3.2 requests a second they keep a = λ / μ = 12.8 of the 16 slots busy (ρ = 0.8).
# Erlang C gives the probability that a call finds every slot busy, and the mean wait of
# those that queue is 1 / (c μ − λ): the queue empties at the spare rate of all the slots.
arrival_rate, mean_call, slots = 3.2, 4.0, 16
service_rate = 1 / mean_call
load = arrival_rate / service_rate
top = load**slots / math.factorial(slots) * slots / (slots - load)
waits = top / (sum(load**k / math.factorial(k) for k in range(slots)) + top)  # C(16, 12.8) = 0.305
wait_answer = waits / (slots * service_rate - arrival_rate)  # 0.305 / 0.8 = 0.381 s

# Exercise 3: 1.5 requests a second of 4.03 s each keep a = 6.05 slots busy, so 7 is the
# least that does not overflow. Erlang C (for exponential calls: these are not, but it is a
# guide) says P(wait > t) = C e^(−(c μ − λ) t), so the p99 wait is ln(100 C) / (c μ − λ):
# about 18 s with 7 slots, 7.5 s with 8 and 4.1 s with 9. The simulation settles it (these
# calls vary less than exponential ones, and wait less): 8 slots give a p99 TTFT of 5.4 s,
# 9 give 3.1 s (ttft_p99(8), ttft_p99(9)).
slots_answer = 9

tokens_answer, wait_answer, slots_answer
