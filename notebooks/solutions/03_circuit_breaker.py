# p1 answers about 330 calls a second and fails 10% of them. A run of k failures in a row
# starts with probability about 0.1 ** k per call: with the default threshold of 3 that is
# 0.001 * 330 = 0.33 chance openings per second, each costing at least the base delay.
# A threshold of 5 makes it 0.0033 per second, well under one in the 20 s before the outage.
# A short base delay keeps both the cost of a false opening and the cooldown running when
# the outage ends short: the cooldowns 0.1, 0.2, 0.4, ... s still double during the outage,
# so the gateway wastes only a few probes on p1 while it is down.
answer = {"failure_threshold": 5, "base_delay": 0.1}
answer
