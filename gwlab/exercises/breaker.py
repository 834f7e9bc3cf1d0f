"""Checks for ``03_circuit_breaker``: tune a breaker for a flaky provider.

The scenario (:func:`flaky_scenario`): p1 carries most of the traffic and fails
:data:`ERROR_RATE` of its calls at random all the time (flaky, but worth using); p2 is the
backup. Now and then p1 has a *blip*: for about a second it fails every call. The learner
chooses ``failure_threshold`` and ``base_delay``; :func:`check_flaky_breaker` runs the
scenario in virtual time on each of :data:`SEEDS`, every run with one blip of each length
in :data:`BLIP_LENGTHS` (in an order and at moments that differ from run to run), and asks
three things of p1's breaker over all the runs together:

1. *few chance openings*: outside the blips the breaker keeps p1 out (open or half-open) for
   at most :data:`MAX_CHANCE_SHARE` of the time p1 works;
2. *it opens for every blip*: a breaker that stays closed lets a provider that is down take
   every call;
3. *quick recovery*: on average over all the blips, p1 is healthy again at most
   :data:`MAX_MEAN_RECOVERY` seconds after a blip ends.

Why the verdict is the idea's and not the runs' luck. Write p for :data:`ERROR_RATE`, k for
the threshold, b for the base delay and λ for p1's calls per second: 100 clients × 0.7 /
(0.7 × 0.1 s + 0.3 × 0.5 s), about 320 (the closed loop of :data:`gwlab.config.CLIENTS`
clients with the weights and latencies of :func:`flaky_scenario`).

- Chance openings. A run of k failures in a row begins with probability (1 − p) p^k per call,
  so p1's breaker opens by chance about λ (1 − p) p^k times a second, and each opening keeps
  p1 out for b plus the time to send a probe and hear back (the clients' next call after the
  cooldown, then p1's latency), or a cooldown of 2b more when that probe fails too
  (probability p). At k = 3 that is about 0.3 openings a second, dozens over the runs' time
  outside the blips, each costing at least a probe: their share of the time stays near its
  mean, above the bound for any b, and k = 3 fails on any seeds. At k = 5 and b <= 1 s the
  expected share is a sixth of the bound or less, and about one opening is expected in all:
  crossing the bound takes several, a compound Poisson tail below 1%.
- Recovery. A blip that finds the breaker closed opens it after the blip began, and p1 is
  healthy no sooner than that opening's first probe has been answered: recovery >= b +
  :data:`P1_LATENCY` − the blip's length. A blip that finds it still open from the blip before
  (whose last probe failed by chance) had that one counted as not recovered until it began,
  :data:`BLIP_SPACING` later, which only raises the mean. So a base delay above
  :data:`MAX_MEAN_RECOVERY` plus the mean blip length fails on any seeds (the exception, a
  chance opening in the b seconds before a blip, is rare at the rate above). With b <= 1 s
  the cooldowns double from b, the one running when a blip ends is at most the blip's length
  plus b, and the mean recovery stays well under the bound; a first probe after a blip that
  fails by chance (probability p) adds 2b and a probe, and the mean crosses the bound only if
  more than a third of the blips' first probes fail instead of a tenth (a binomial tail below
  10⁻³ over :data:`SEEDS` × :data:`BLIP_LENGTHS` blips).
- Opening for every blip. A blip brings about λ × its length failures in a row, so a
  threshold above λ times the shortest blip stays closed through it, on every seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from gwlab import config
from gwlab.config import ConfigError, Scenario
from gwlab.exercises import Verdict, number, wrong_kind
from gwlab.sim import SimResult, simulate

ERROR_RATE = 0.1
"""p1's share of calls that fail at random, all the time."""
P1_LATENCY = 0.1
"""p1's latency in seconds: also how long a probe to p1 takes."""
BLIP_LENGTHS = (0.4, 0.55, 0.7, 0.85, 1.0)
"""Seconds of each blip of a run: p1 fails every call."""
FIRST_BLIP = 10.0
"""When a run's first blip begins, in seconds."""
BLIP_SPACING = 10.0
"""Seconds from the start of one blip to the start of the next."""
SEEDS = (1, 2, 3, 4, 5, 6)
"""The runs of the check. Run ``i`` starts its blips ``i`` × :data:`BLIP_SHIFT` seconds later
and takes the lengths in turn from the ``i``-th one."""
BLIP_SHIFT = P1_LATENCY / len(SEEDS)
"""Shift of the blips from one run to the next: every call takes a whole number of tenths of
a second, so the clients' calls come in a rhythm of :data:`P1_LATENCY`, and the shifts spread
the blips' starts and ends over it."""
DURATION = FIRST_BLIP + len(BLIP_LENGTHS) * BLIP_SPACING
"""Simulated seconds of each run."""
MAX_CHANCE_SHARE = 0.03
"""Largest share of p1's working time (outside the blips) that its breaker may keep it out."""
MAX_MEAN_RECOVERY = 1.5
"""Seconds after a blip's end by which p1 must be healthy again, on average over all blips."""
ANSWER_KEYS = ("failure_threshold", "base_delay")


def blips(run: int) -> list[tuple[float, float]]:
    """``(start, end)`` in seconds of the blips of the check's ``run``-th run (0-based)."""
    out = []
    for j in range(len(BLIP_LENGTHS)):
        start = FIRST_BLIP + j * BLIP_SPACING + run * BLIP_SHIFT
        out.append((start, start + BLIP_LENGTHS[(run + j) % len(BLIP_LENGTHS)]))
    return out


def flaky_scenario(answer: Mapping[str, Any], run: int = 0) -> Scenario:
    """The flaky scenario of the ``run``-th run with the breaker settings ``answer``. Raises
    :class:`~gwlab.config.ConfigError` for a bad setting."""
    events = []
    for start, end in blips(run):
        events += [{"at": start, "providers": {"p1": {"outage": "error"}}},
                   {"at": end, "providers": {"p1": {"outage": "none"}}}]
    return config.from_dict({
        "providers": {
            "p1": {"weight": 70, "latency": P1_LATENCY, "error_rate": ERROR_RATE},
            "p2": {"weight": 30, "latency": 0.5, "error_rate": 0.02},
        },
        "breaker": dict(answer),
        "events": events,
    }, "the flaky scenario")


def flaky_run(answer: Mapping[str, Any], run: int = 0) -> SimResult:
    """The ``run``-th run of the check (seed ``SEEDS[run]``) with ``answer`` in force, in
    virtual time: look at its ``transitions`` to see what p1's breaker did."""
    return simulate(flaky_scenario(answer, run), duration=DURATION, seed=SEEDS[run])


def shut_out(result: SimResult, provider: str = "p1") -> list[tuple[float, float]]:
    """The spells during which ``provider``'s breaker was open or half-open: from an opening
    to the next recovery (or the run's end)."""
    spells, opened = [], None
    for t in result.transitions:
        if t.provider != provider:
            continue
        if t.target == "open" and opened is None:
            opened = t.time
        elif t.target == "healthy" and opened is not None:
            spells.append((opened, t.time))
            opened = None
    if opened is not None:
        spells.append((opened, result.duration))
    return spells


@dataclass(frozen=True)
class Recovery:
    """How long after a blip's end p1 was healthy again (cut off at the next blip or the
    run's end when it was not), or ``None`` when its breaker never opened for the blip."""

    seed: int
    start: float
    length: float
    seconds: float | None


@dataclass(frozen=True)
class Score:
    """What :func:`check_flaky_breaker` judges, over all runs."""

    chance_openings: int
    """Openings outside the blips."""
    chance_share: float
    """Share of the time outside the blips that p1 was kept out."""
    recoveries: tuple[Recovery, ...]
    calls_per_second: float
    """p1's calls per second while its breaker let calls through."""

    @property
    def missed(self) -> list[Recovery]:
        """The blips for which p1's breaker never opened."""
        return [r for r in self.recoveries if r.seconds is None]

    @property
    def mean_recovery(self) -> float:
        """Mean recovery over the blips that opened the breaker (0 if none did)."""
        times = [r.seconds for r in self.recoveries if r.seconds is not None]
        return sum(times) / len(times) if times else 0.0

    @property
    def slowest(self) -> Recovery | None:
        opened = [r for r in self.recoveries if r.seconds is not None]
        return max(opened, key=lambda r: r.seconds) if opened else None


def _score_run(result: SimResult, run: int) -> tuple[int, float, list[Recovery]]:
    """Chance openings, seconds kept out by chance and the blips' recoveries of one run. A
    spell belongs to a blip when it overlaps the blip or the latency after it (a call sent
    during the blip fails a latency later)."""
    schedule = blips(run)
    spells = shut_out(result)
    windows = [(start, end + P1_LATENCY) for start, end in schedule]
    chance = [(a, b) for a, b in spells if not any(a <= w_end and b > w_start for w_start, w_end in windows)]
    recoveries = []
    for i, ((start, end), (w_start, w_end)) in enumerate(zip(schedule, windows)):
        cut = schedule[i + 1][0] if i + 1 < len(schedule) else result.duration
        covering = [b for a, b in spells if a <= w_end and b > w_start]
        seconds = max(0.0, min(max(covering), cut) - end) if covering else None
        recoveries.append(Recovery(SEEDS[run], start, end - start, seconds))
    return len(chance), sum(b - a for a, b in chance), recoveries


def score(answer: Mapping[str, Any]) -> Score:
    """Run the check's scenario on every seed with the breaker settings ``answer`` and score
    p1's breaker. Raises :class:`~gwlab.config.ConfigError` for a bad setting."""
    openings, kept_out, working, calls, in_use = 0, 0.0, 0.0, 0, 0.0
    recoveries: list[Recovery] = []
    for run in range(len(SEEDS)):
        result = flaky_run(answer, run)
        n, seconds, blip_recoveries = _score_run(result, run)
        openings += n
        kept_out += seconds
        recoveries += blip_recoveries
        working += result.duration - sum(end - start for start, end in blips(run))
        calls += result.summary()["providers"]["p1"]["requests"]
        in_use += result.duration - sum(b - a for a, b in shut_out(result))
    return Score(openings, kept_out / working, tuple(recoveries), calls / in_use)


def check_flaky_breaker(answer: Any) -> Verdict:
    """Does the breaker setting ``answer`` (a dict with ``failure_threshold`` and
    ``base_delay``) leave a flaky p1 in use, shut it out for every blip and bring it back
    soon after? A base delay above the breaker's default ``max_cooldown`` is told that it is
    too long, not that ``max_cooldown`` (which the learner does not set here) is too short."""
    if not isinstance(answer, Mapping) or set(answer) != set(ANSWER_KEYS):
        return wrong_kind(answer, "a dict with the keys failure_threshold and base_delay (for example "
                                  "{'failure_threshold': 3, 'base_delay': 1.0})")
    delay = number(answer["base_delay"])
    if delay is not None and delay > config.MAX_COOLDOWN:
        return Verdict(False, f"base delay {delay:g} s is longer than any cooldown may last (max_cooldown, "
                              f"{config.MAX_COOLDOWN:g} s, is not part of this exercise), and far too long: an "
                              f"opening keeps p1 out for the base delay at least, and the blips last "
                              f"{min(BLIP_LENGTHS):g} to {max(BLIP_LENGTHS):g} s")
    try:
        s = score(answer)
    except ConfigError as exc:
        return Verdict(False, str(exc))
    setting = f"threshold {answer['failure_threshold']}, base delay {answer['base_delay']:g} s"
    runs, blip_count = len(SEEDS), len(s.recoveries)
    problems = []
    if s.chance_share > MAX_CHANCE_SHARE:
        problems.append(
            f"between blips p1's breaker opened {s.chance_openings} times by chance in {runs} runs and kept p1 out "
            f"{s.chance_share:.1%} of the time it worked: too often (allowed: {MAX_CHANCE_SHARE:.1%}, "
            f"{s.chance_share / MAX_CHANCE_SHARE:.1f} times that). A run of k failures in a row comes by chance "
            f"with probability about {ERROR_RATE:g} ** k per call, at {s.calls_per_second:.0f} calls a second to "
            "p1, and each opening keeps p1 out for the base delay at least.")
    if s.missed:
        shortest = min(r.length for r in s.missed)
        problems.append(
            f"p1's breaker stayed closed through {len(s.missed)} of the {blip_count} blips (the shortest "
            f"{shortest:g} s): the threshold is too high, and p1 took every call while it was down. At "
            f"{s.calls_per_second:.0f} calls a second a {shortest:g} s blip brings about "
            f"{s.calls_per_second * shortest:.0f} failures in a row.")
    if s.mean_recovery > MAX_MEAN_RECOVERY:
        slow = s.slowest
        problems.append(
            f"after a blip p1 was healthy again {s.mean_recovery:.2f} s later on average: too slow by "
            f"{s.mean_recovery - MAX_MEAN_RECOVERY:.2f} s (allowed: {MAX_MEAN_RECOVERY:g} s; the slowest, "
            f"{slow.seconds:.1f} s after the {slow.length:g} s blip at {slow.start:.2f} s of seed {slow.seed}). An "
            f"opening keeps p1 out for the base delay at least, and the blips last {min(BLIP_LENGTHS):g} to "
            f"{max(BLIP_LENGTHS):g} s: a base delay much longer than a blip keeps a working p1 out.")
    if problems:
        return Verdict(False, f"{setting}: " + " Also: ".join(problems))
    return Verdict(True, f"{setting}: in {runs} runs p1 was kept out by chance {s.chance_share:.2%} of the time "
                         f"it worked ({s.chance_openings} openings), its breaker opened for all {blip_count} blips, "
                         f"and p1 was healthy again {s.mean_recovery:.2f} s after a blip on average (the slowest "
                         f"{s.slowest.seconds:.1f} s).")
