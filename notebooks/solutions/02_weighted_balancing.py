# Exercise 1: the standard deviation of p3's share p over n requests is sqrt(p (1 - p) / n).
# Four of them must fit in one point: 4 * sqrt(0.1 * 0.9 / n) <= 0.01, so
# n >= 16 * 0.1 * 0.9 / 0.01 ** 2 = 14,400.
sample_answer = round(16 * 0.1 * 0.9 / 0.01**2)  # 14,400 (round() drops floating-point dust)

# Exercise 2: with p3 out, the weights are renormalised over p1 and p2.
share_answer = 70 / (70 + 20)

sample_answer, share_answer
