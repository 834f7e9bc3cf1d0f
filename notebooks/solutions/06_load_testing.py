# Little's law, L = λ × W, with λ the rate of admitted requests and W their mean latency,
# both from the summary.
from gwlab.exercises.load_testing import little_run

summary = little_run().summary()
in_flight = summary["rates"]["admitted"] * summary["latency"]["mean"]
in_flight  # set answer = in_flight for the check
