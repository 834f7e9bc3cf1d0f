"""Independent, named random streams derived from one seed.

Each component draws from its own ``random.Random``: arrivals, the balancer's picks, each
provider's latency and each provider's errors. A stream depends only on the seed and its
name, so adding draws to one never shifts another (common random numbers), and the same
seed gives the same numbers in every process (string seeds are hashed with SHA-512, not
with Python's randomised ``hash``). Nothing in gwlab touches the global ``random`` state.
"""

from __future__ import annotations

from random import Random


def stream(seed: int, name: str) -> Random:
    """The random stream called ``name`` under ``seed``."""
    return Random(f"gwlab/{seed}/{name}")


def replica_seed(seed: int, index: int) -> int:
    """The seed of replica ``index`` of a run seeded ``seed``: the seed itself for replica 0
    (one replica is the plain gateway), else 63 bits of the named stream ``replica/INDEX``.
    Live replicas draw from their own seed; a simulation's replicas pick providers and
    retries with it (the providers they share draw from the run's)."""
    return seed if index == 0 else stream(seed, f"replica/{index}").getrandbits(63)
