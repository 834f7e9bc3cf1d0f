"""The run summary: one document for ``gwlab run``, ``gwlab simulate`` and ``lab.run_for``.

Every shell builds it with :func:`summarise` from the same kinds of input, so a live run and
its replay compare field by field, and each field means one thing, stated in
:func:`summarise`. The fields of the first release keep their values byte for byte; fields
added with the one summary builder (``events_refused``, ``clients``, ``requested_rate``,
``achieved_offered_rate``) are always there, and a field added after it appears only when it
holds something (not zero), so that the summary of a run it does not concern stays what it
was; the scenario's added fields are left out at their defaults in the same way
(:meth:`gwlab.config.Scenario.to_dict`). Breaker openings are counted one way, by a :class:`Trips` subscribed to
the router (:meth:`gwlab.router.Router.subscribe`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from gwlab.breaker import State, Transition
from gwlab.config import Scenario, WorkloadConfig, shown
from gwlab.router import RETRY_DECISIONS, Snapshot
from gwlab.stats import ADMITTED, QUANTILES, RATE_LIMITED, USER_OUTCOMES, LatencyHistogram, Tally, code_name

_FIRST_RELEASE = (200, 502, 504)
"""The statuses a provider's ``codes`` always list; the others only when they happened."""


class Trips:
    """Breaker listener: how many times each provider's breaker opened (transitions to OPEN,
    a failed probe's OPEN -> OPEN included)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, event: Transition) -> None:
        if event.target is State.OPEN:
            self.counts[event.provider] += 1


def breaker_states(snapshots: Sequence[Snapshot], name: str) -> str:
    """The state of provider ``name``'s breaker in ``snapshots``: its value (``healthy``) for
    one gateway, else how many replicas are in each state (``healthy×2 open×1``)."""
    if len(snapshots) == 1:
        return snapshots[0].providers[name].state.value
    states = Counter(s.providers[name].state.value for s in snapshots)
    return " ".join(f"{state}×{n}" for state, n in sorted(states.items()))


def requested_rate(workloads: Sequence[tuple[float, WorkloadConfig]], duration: float) -> float | None:
    """The open-loop rate asked for, averaged over ``duration`` seconds, from each workload
    with the seconds into the run from which it applied (the first at 0); ``None`` when any
    of them is a closed loop."""
    if any(w.mode != "open" for _, w in workloads):
        return None
    if len(workloads) == 1 or duration <= 0:
        return workloads[-1][1].rate
    ends = [at for at, _ in workloads[1:]] + [duration]
    asked = sum(w.rate * (min(end, duration) - min(at, duration)) for (at, w), end in zip(workloads, ends))
    return asked / duration


def user_requests(tally: Tally) -> dict[str, Any]:
    """The ``user_requests`` block of a summary from ``tally``'s user counts (see
    :func:`summarise`)."""
    users = tally.users
    outcomes = {outcome: users[outcome] for outcome in USER_OUTCOMES}
    offered = sum(outcomes.values())
    block = {"offered": offered, "outcomes": outcomes, "goodput": _ratio(outcomes["ok"], offered),
             "attempts": users["attempts"], "attempts_per_request": _ratio(users["attempts"], offered)}
    if users["wasted"]:
        block["wasted"] = users["wasted"]
    return block


def _quantiles(histogram: LatencyHistogram) -> dict[str, float | None]:
    """p50, p95, p99, mean and max in seconds (``None`` over nothing)."""
    return {
        **{f"p{round(q * 100)}": histogram.quantile(q) for q in QUANTILES},
        "mean": histogram.mean,
        "max": histogram.max if histogram.count else None,
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def summarise(
    tally: Tally,
    *,
    mode: str,
    seed: int,
    scenario: Scenario,
    duration: float,
    sent: int,
    saturated: int,
    workloads: Sequence[tuple[float, WorkloadConfig]],
    end: Snapshot,
    trips: Mapping[str, int],
    fallbacks: Mapping[str, int],
    events_refused: int,
    retries: Mapping[str, int],
    replicas: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The summary of a run of ``duration`` seconds, JSON-ready. Its fields:

    - ``mode``: ``"simulated"`` (``gwlab simulate``), ``"live"`` (``gwlab run``, the lab) or
      ``"virtual"`` (a virtual lab's ``run_for``, :mod:`gwlab.lab.virtual`);
      ``seed``; ``scenario``: the scenario in force when the run began, as plain data, any
      password in it redacted (:func:`gwlab.config.shown`).
    - ``duration``: seconds of the run (virtual ones in a simulation; of sending in
      ``gwlab run``; of the window in ``lab.run_for``).
    - ``offered``: requests counted in ``tally``: each one answered during the run, whatever
      its status, and each one cut off by the run's end (499). ``admitted``: those answered
      200, 502, 504 or ``stream_error``, or 429 by a provider. ``codes``: the count per status, by its HTTP code, or
      ``transport_error`` for a request that got no HTTP answer (client side only).
    - ``rates``: ``offered``, ``admitted`` and ``ok`` (200) per second of ``duration``.
    - ``availability`` = 200 / admitted; ``goodput`` = 200 / offered (``None`` over nothing).
    - ``latency``: p50, p95, p99, mean and max of the admitted requests' latencies, within
      :data:`gwlab.stats.RELATIVE_ERROR`.
    - ``providers``, per provider in the scenario's order: ``requests`` (admitted calls to
      it), ``share`` of the admitted calls, ``codes`` (200, 502, 504, and ``stream_error``
      and 429 when there were any), ``trips`` (its
      breaker's openings during the run, from :class:`Trips`), ``fallbacks`` (calls forced on
      it because no provider was eligible, during the run) and ``state`` (its breaker's state
      at the end, from ``end``). ``trips`` and ``fallbacks`` are also given in total.
    - With replicas (``replicas``, one per replica, given when there are more than one: its
      index ``replica``, its ``end`` snapshot, its ``trips`` and ``fallbacks`` by provider),
      ``trips`` and ``fallbacks`` are the totals over the replicas, each provider's ``state``
      counts the replicas in each state (``healthy×3 open×1``), and ``replicas`` (added)
      lists, per replica, its index and each provider's ``state``, ``trips`` and ``fallbacks``.
    - ``clients``: closed-loop clients when the run began (``None`` for an open loop);
      ``requested_rate``: see :func:`requested_rate`, from ``workloads``;
      ``achieved_offered_rate``: requests *sent* per second of the run (``sent`` /
      ``duration``), however many were answered.
    - ``saturated`` (added; only when not zero): open-loop arrivals the clients did not send
      because ``workload.max_in_flight`` requests were outstanding at their time: the load
      generator could not keep up, whatever the gateway did. They are in no other count;
      ``achieved_offered_rate`` leaves them out, ``requested_rate`` does not.
    - ``events_refused``: scripted events that did not fit the scenario in force at their
      time and were skipped (see :class:`gwlab.timeline.Player`).
    - ``retries`` (added; only when the gateway retried): its decisions after failed
      attempts, by :data:`gwlab.router.RETRY_DECISIONS` (``retries``, from the shell's
      counts): ``retry`` (tried again) and not, for want of ``attempts``, time
      (``deadline``) or ``budget``. ``offered`` and ``codes`` count requests, each once
      however many attempts it took.
    - ``user_requests`` (added; only for clients that time out or retry): what people asked
      for, against the attempts that reached the gateway (DESIGN, "Retries and fallbacks"):
      ``offered`` (user requests, each counted as it ended, or cut off by the run's end),
      ``outcomes`` (by :data:`gwlab.stats.USER_OUTCOMES`), ``goodput`` = ``ok`` / offered,
      ``attempts`` (sent to the gateway) and ``attempts_per_request``; ``wasted`` (simulated
      runs only), the gateway's answers to attempts whose clients had stopped waiting: work
      done for no one. ``offered`` and ``codes`` above then count attempts, as their clients
      saw them (``client_timeout`` for one given up).
    - For LLM traffic (added; each only when not empty): ``ttft``, the streams' time to
      first token, and ``time_per_output_token``, quantiles as ``latency`` gives them;
      ``output_tokens``: ``total`` and ``per_second`` of the tokens the answers carried
      (see :class:`gwlab.stats.Tally`). A stream that failed after its first byte is counted
      under ``stream_error`` in ``codes``, admitted, and not ``ok``. When the workload
      streams or caps tokens (``stream_share`` or ``max_tokens``), every answer's tokens
      count, a provider's fixed reply included (9 tokens, all at its first frame: a time
      per output token of 0); otherwise only those of providers with a length model or
      token timing. TTFT and latency count from the request's arrival (a live client's
      scheduled send). Live and simulated runs count alike (``tests/test_live_vs_sim.py``),
      but for one thing a client cannot see: a live stream cut by an error frame counts no
      tokens and no time per output token, where the simulator counts the tokens given
      before the failure.
    """
    providers = list(end.providers)
    offered = tally.count()
    admitted = tally.admitted()
    ok = tally.count([200])
    codes: Counter[str] = Counter()
    for (status, _), n in tally.by_status.items():
        codes[code_name(status)] += n
    per_provider = {}
    for name in providers:
        calls = tally.admitted(name)
        per_provider[name] = {
            "requests": calls,
            "share": _ratio(calls, admitted),
            "codes": {code_name(s): tally.by_status[s, name] for s in (*ADMITTED, RATE_LIMITED)
                      if s in _FIRST_RELEASE or tally.by_status[s, name]},
            "trips": trips.get(name, 0),
            "fallbacks": fallbacks.get(name, 0),
            "state": breaker_states([r["end"] for r in replicas] or [end], name),
        }
    per_second = (lambda n: n / duration) if duration > 0 else (lambda n: None)
    w = scenario.workload
    added: dict[str, Any] = {"saturated": saturated} if saturated else {}
    if tally.ttft.count:
        added["ttft"] = _quantiles(tally.ttft)
    if tally.tpot.count:
        added["time_per_output_token"] = _quantiles(tally.tpot)
    if any(retries.values()):
        added["retries"] = {decision: retries.get(decision, 0) for decision in RETRY_DECISIONS}
    if tally.users:
        added["user_requests"] = user_requests(tally)
    if replicas:
        added["replicas"] = [
            {"replica": r["replica"],
             "providers": {name: {"state": r["end"].providers[name].state.value, "trips": r["trips"].get(name, 0),
                                  "fallbacks": r["fallbacks"].get(name, 0)} for name in providers}}
            for r in replicas
        ]
    if tally.output_tokens:
        added["output_tokens"] = {"total": tally.output_tokens, "per_second": per_second(tally.output_tokens)}
    return {
        "duration": duration,
        "offered": offered,
        "admitted": admitted,
        "codes": dict(sorted(codes.items())),
        "rates": {"offered": per_second(offered), "admitted": per_second(admitted), "ok": per_second(ok)},
        "availability": _ratio(ok, admitted),
        "goodput": _ratio(ok, offered),
        "latency": _quantiles(tally.latency),
        "providers": per_provider,
        "trips": sum(trips.get(name, 0) for name in providers),
        "fallbacks": sum(fallbacks.get(name, 0) for name in providers),
        "mode": mode,
        "seed": seed,
        "scenario": shown(scenario.to_dict()),
        "clients": w.clients if w.mode == "closed" else None,
        "requested_rate": requested_rate(workloads, duration),
        "achieved_offered_rate": per_second(sent),
        "events_refused": events_refused,
        **added,
    }
