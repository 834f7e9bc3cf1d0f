# p1 answers about 320 calls a second (100 clients, 70% of their calls to p1 at 0.1 s, 30% to
# p2 at 0.5 s) and fails 10% of them. A run of k failures in a row starts with probability
# about 0.1 ** k per call: with the default threshold of 3 that is 0.001 * 320 = 0.3 chance
# openings per second, each keeping p1 out for the base delay and a probe at least. A
# threshold of 5 makes it 0.003 per second: about one in the five minutes of the check's runs.
# The threshold must still be reached during a blip: at 320 calls a second even the 0.4 s
# blip brings over a hundred failures in a row, and 5 of them open the breaker at once.
# Every opening keeps p1 out for the base delay at least, and a blip lasts 1 s at most: a
# base delay of 4 s would keep p1 out for about 3 s after a blip it had long recovered from.
# A short base delay keeps both the cost of a false opening and the wait after a blip short:
# the cooldowns 0.1, 0.2, 0.4, ... s still double during the blip, so the gateway wastes only
# a few probes on p1 while it is down.
answer = {"failure_threshold": 5, "base_delay": 0.1}
answer
