# A batch sends 200 requests at 400 per second, so it lasts 200 / 400 = 0.5 s. Meanwhile the
# steady traffic sends 40 per second and the bucket refills at 100 per second: the level falls
# by (400 + 40 - 100) * 0.5 = 170 tokens. Between batches it gains (100 - 40) * 4.5 = 270
# tokens, more than the 170 a batch took, so the bucket is full again when the next one comes.
# A burst of about 170 is therefore enough. The pure core settles the last token:
from gwlab.exercises.token_bucket import rejections

answer = next(burst for burst in range(160, 200) if not rejections(burst))
answer
