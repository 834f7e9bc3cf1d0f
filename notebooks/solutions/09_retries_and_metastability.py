# Exercise 1: the gateway's attempts at one client attempt are a capped geometric series:
# 1 + p + p² = (1 − p³) / (1 − p) calls, since the n-th is made only when the n − 1 before it
# failed. A client attempt fails only when all three calls do, with probability q = p³, and the
# client's attempts are the same series in q. The layers multiply: 9 calls at p = 1.


def amplification_answer(p):
    def attempts(q, n=3):
        return n if q == 1 else (1 - q**n) / (1 - q)

    return attempts(p) * attempts(p**3)


# Exercise 2: once the queue is full and every attempt times out, each user request makes
# retries + 1 attempts: 40 × (retries + 1) a second against the model's 100. One retry brings
# 80 a second and the queue drains; two bring 120 and it never does.
retries_answer = 1

amplification_answer(0.5), amplification_answer(1.0), retries_answer
