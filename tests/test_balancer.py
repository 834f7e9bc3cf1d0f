"""Load-balancing policies: exact picks from seeded randomness, exact round-robin sequences."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from random import Random

import pytest

from gwlab import balancer, config
from gwlab.balancer import PowerOfTwo, RoundRobin, WeightedRandom


@dataclass
class C:
    """A choice as the router hands it to a balancer."""

    name: str
    weight: float
    in_flight: int = 0


def expected_weighted(choices: list[C], u: float) -> C:
    """The choice whose cumulative-weight interval holds ``u * total``."""
    point = u * sum(c.weight for c in choices)
    for choice, upper in zip(choices, itertools.accumulate(c.weight for c in choices)):
        if point < upper:
            return choice
    raise AssertionError("u must be < 1")


SEED_CHOICES = [C("p1", 70), C("p2", 20), C("p3", 10)]


@pytest.mark.parametrize(
    "eligible",
    [SEED_CHOICES, [SEED_CHOICES[0], SEED_CHOICES[2]], [SEED_CHOICES[1], SEED_CHOICES[2]], [SEED_CHOICES[1]]],
    ids=["all", "p2-excluded", "p1-excluded", "only-p2"],
)
def test_weighted_random_renormalises_over_the_given_choices(eligible):
    picker, draws = Random(20240611), Random(20240611)
    picks = [WeightedRandom().pick(eligible, picker) for _ in range(2000)]
    assert picks == [expected_weighted(eligible, draws.random()) for _ in range(2000)]
    assert {c.name for c in picks} == {c.name for c in eligible}


def test_weighted_random_uses_one_draw_per_pick():
    picker, draws = Random(5), Random(5)
    WeightedRandom().pick(SEED_CHOICES, picker)
    draws.random()
    assert picker.getstate() == draws.getstate()


def test_weighted_random_shares_follow_remaining_weights():
    # p2 excluded: p1 should get 70/80 of the picks. 4-sigma binomial bound on 8000 picks
    # (sigma = sqrt(n p (1-p)) ~ 29.6); the seed is fixed, so the test is deterministic.
    rng = Random(11)
    n = 8000
    p1 = sum(WeightedRandom().pick([SEED_CHOICES[0], SEED_CHOICES[2]], rng).name == "p1" for _ in range(n))
    expected = n * 70 / 80
    sigma = (n * (70 / 80) * (10 / 80)) ** 0.5
    assert abs(p1 - expected) <= 4 * sigma


def test_weighted_random_never_picks_zero_weight():
    rng = Random(3)
    choices = [C("a", 0), C("b", 1), C("c", 0)]
    assert {WeightedRandom().pick(choices, rng).name for _ in range(500)} == {"b"}


@pytest.mark.parametrize("policy", [WeightedRandom, RoundRobin, PowerOfTwo])
@pytest.mark.parametrize("choices", [[], [C("a", 0)], [C("a", 0), C("b", 0)]], ids=["none", "one-zero", "two-zero"])
def test_zero_total_weight_picks_none(policy, choices):
    assert policy().pick(choices, Random(1)) is None


def test_round_robin_weights_5_1_1_give_the_smooth_sequence():
    rr = RoundRobin()
    choices = [C("a", 5), C("b", 1), C("c", 1)]
    rng = Random(0)
    state = rng.getstate()
    names = [rr.pick(choices, rng).name for _ in range(14)]
    assert names == list("aabacaa") * 2
    assert rng.getstate() == state  # uses no randomness


def test_round_robin_gives_exact_shares_over_whole_cycles():
    rr = RoundRobin()
    choices = [C("p1", 70), C("p2", 20), C("p3", 10)]
    counts = {c.name: 0 for c in choices}
    for _ in range(100 * 37):
        counts[rr.pick(choices, Random(0)).name] += 1
    assert counts == {"p1": 70 * 37, "p2": 20 * 37, "p3": 10 * 37}


def test_round_robin_follows_a_changed_eligible_set():
    rr = RoundRobin()
    a, b, c = C("a", 1), C("b", 1), C("c", 2)
    assert [rr.pick([a, b], Random(0)).name for _ in range(4)] == ["a", "b", "a", "b"]
    counts = {"a": 0, "c": 0}
    for _ in range(300):
        counts[rr.pick([a, c], Random(0)).name] += 1
    assert counts == {"a": 100, "c": 200}


def test_power_of_two_prefers_fewer_in_flight():
    busy, idle = C("busy", 1, in_flight=5), C("idle", 1, in_flight=2)
    rng = Random(8)
    # With two choices, both are always drawn, so the idle one always wins.
    assert {PowerOfTwo().pick([busy, idle], rng).name for _ in range(200)} == {"idle"}


def test_power_of_two_tie_goes_to_first_drawn():
    choices = [C("a", 1, 3), C("b", 2, 3), C("c", 3, 3)]
    picker, draws = Random(42), Random(42)
    for _ in range(500):
        first = expected_weighted(choices, draws.random())
        expected_weighted([c for c in choices if c is not first], draws.random())
        assert PowerOfTwo().pick(choices, picker) is first


def test_power_of_two_compares_two_weighted_draws():
    choices = [C("a", 1, 4), C("b", 2, 1), C("c", 3, 2)]
    picker, draws = Random(99), Random(99)
    for _ in range(500):
        first = expected_weighted(choices, draws.random())
        second = expected_weighted([c for c in choices if c is not first], draws.random())
        expected = first if first.in_flight <= second.in_flight else second
        assert PowerOfTwo().pick(choices, picker) is expected


def test_power_of_two_single_choice():
    only = C("a", 1, 9)
    assert PowerOfTwo().pick([only], Random(0)) is only


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the balancer registry, so registering in a test leaks nowhere."""
    monkeypatch.setattr(balancer, "_REGISTRY", dict(balancer._REGISTRY))


def test_builtin_names():
    assert balancer.names() == ("weighted_random", "round_robin", "power_of_two")
    assert isinstance(balancer.create("weighted_random"), WeightedRandom)
    assert isinstance(balancer.create("round_robin"), RoundRobin)
    assert isinstance(balancer.create("power_of_two"), PowerOfTwo)


def test_create_gives_fresh_objects():
    assert balancer.create("round_robin") is not balancer.create("round_robin")


def test_register_adds_a_policy(registry):
    class First:
        def pick(self, choices, rng):
            return choices[0] if choices else None

    balancer.register("first", First)
    assert balancer.names()[-1] == "first"
    assert balancer.create("first").pick([C("x", 1), C("y", 1)], Random(0)).name == "x"


@pytest.mark.parametrize("name", ["two words", "", "1st", "a-b"])
def test_register_rejects_bad_names(registry, name):
    with pytest.raises(ValueError, match="expected letters, digits and _"):
        balancer.register(name, WeightedRandom)
    assert name not in balancer.names()


def test_create_unknown_name_names_value_and_allowed():
    with pytest.raises((KeyError, ValueError)) as error:
        balancer.create("fastest")
    message = str(error.value)
    assert "fastest" in message
    assert all(name in message for name in balancer.names())


@pytest.mark.parametrize("policy", [WeightedRandom, RoundRobin, PowerOfTwo])
def test_the_largest_weights_of_the_most_providers_sum_finite_and_each_gets_picked(policy):
    scenario = config.from_dict({"providers": {f"p{i}": {"weight": config.MAX_WEIGHT}
                                               for i in range(config.MAX_PROVIDERS)}})
    choices = [C(p.name, p.weight) for p in scenario.providers]
    assert sum(c.weight for c in choices) == config.MAX_WEIGHT * config.MAX_PROVIDERS < 2**53
    pick, rng = policy().pick, Random(7)
    picked = Counter(pick(choices, rng).name for _ in range(100 * len(choices)))
    assert set(picked) == {c.name for c in choices}
    assert min(picked.values()) > 50


def test_three_largest_weights_give_each_provider_a_third():
    choices = [C(f"p{i}", config.MAX_WEIGHT) for i in (1, 2, 3)]
    rng = Random(3)
    picked = Counter(WeightedRandom().pick(choices, rng).name for _ in range(3000))
    assert all(900 < picked[c.name] < 1100 for c in choices)
