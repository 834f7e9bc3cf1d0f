# The cooldown running when an outage ends decides the recovery time, and the longest cooldown
# is max_cooldown: keep it under 5 s, less a probe's 0.1 s, and every outage passes, however
# long it is and wherever in a cooldown it ends. Every cooldown that ends during the outage
# costs one failed probe: a cap of 4 s gives about one probe per 4 s of outage, within the
# allowed one per 3 s. The base delay matters little once the cap is reached.
answer = {"base_delay": 1.0, "max_cooldown": 4.0}
