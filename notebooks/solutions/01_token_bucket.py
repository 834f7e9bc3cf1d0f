# A batch sends 200 requests at 400 per second, at 1.0000, 1.0025, ..., 1.4975 s: it lasts half
# a second. From its first request at 1.000 s to 1.500 s, both ends included, the steady stream
# sends 21 requests (at 1.000, 1.025, ..., 1.500 s): 221 requests take a token, while the bucket
# refills 100 * 0.5 = 50 tokens. A full bucket must therefore hold 221 - 50 = 171 tokens; after
# 1.5 s the steady 40 per second are fewer than the 100 tokens that flow in. (The estimate
# (400 + 40 - 100) * 0.5 = 170 counts 20 steady requests in the half second: one short.)
# Between batches the bucket gains (100 - 40) * 4.5 = 270 tokens, more than the 171 a batch
# took, so it is full again when the next one comes. The pure core confirms the count:
from gwlab.exercises.token_bucket import rejections

answer = 200 + 21 - 50
print(f"burst {answer}: {len(rejections(answer))} refused; burst {answer - 1}: {len(rejections(answer - 1))} refused")
answer
