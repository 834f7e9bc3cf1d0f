"""The terminal view of a live run: a compact status redrawn once a second, and the summary.

:func:`status_lines` and :func:`summary_lines` are pure (data in, text out);
:class:`LiveView` only decides how the lines reach the terminal: redrawn in place with ANSI
cursor movement on a terminal, appended as one plain line per update otherwise (a log file,
a pipe, a CI job).

LLM traffic adds to both, and only when it is in play (streams ended, output tokens counted
or a stream failed), so that the view of a run without it stays what it was: the status
shows ``stream_error`` among the codes and a line with the time to first token (p50, p99)
and the output tokens per second; the summary a line with the time to first token, the time
per output token and the output tokens.

Clients that time out or retry add a line to both, only then: the user requests that ended
(per second in the status), their goodput (the share that succeeded) and the attempts each
made on average; the summary's also counts them by outcome.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, TextIO

from gwlab import config
from gwlab.router import Snapshot
from gwlab.summary import breaker_states
from gwlab.stats import QUANTILES, RATE_LIMITED, STREAM_ERROR, USER_OUTCOMES, LatencyHistogram, Tally, code_name

SHOWN_CODES = (200, RATE_LIMITED, 502, 504)
"""Status codes always shown, even at zero; any other code appears once it occurs."""
SEPARATOR = "  |  "
LLM_QUANTILES = (0.5, 0.99)
"""The quantiles of the time to first token (and per output token) the view shows."""


def _codes(tally: Tally, llm: bool) -> list[int]:
    shown = (*SHOWN_CODES, STREAM_ERROR) if llm else SHOWN_CODES
    seen = {status for status, _ in tally.by_status}
    return [*shown, *sorted(seen - set(shown))]


def llm_traffic(tally: Tally) -> bool:
    """Whether ``tally`` holds LLM traffic: a stream that ended, output tokens, or a stream
    that failed after its first byte."""
    return bool(tally.ttft.count or tally.output_tokens or tally.count([STREAM_ERROR]))


_LLM_KEYS = tuple(f"p{round(q * 100)}" for q in LLM_QUANTILES)


def _llm_quantiles(histogram: LatencyHistogram) -> str:
    return "  ".join(f"{key} {seconds_text(histogram.quantile(q))}" for key, q in zip(_LLM_KEYS, LLM_QUANTILES))


def seconds_text(value: float | None) -> str:
    """A time as the status lines show it: ``0.123s``, or ``-`` for none."""
    return "-" if value is None else f"{value:.3f}s"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _users(ended: str, ok: int, offered: int, attempts: int) -> str:
    """The user requests' line: ``ended`` (how many, as shown), their goodput and attempts
    per request."""
    per_request = f"{attempts / offered:.2f}" if offered else "-"
    return f"user requests {ended}  goodput {_percent(ok, offered)}  attempts per request {per_request}"


def cannot_keep_up(sent: float, saturated: float) -> str:
    """What a status or summary says when the clients could not send every arrival: ``sent``
    and ``saturated`` (not sent, the in-flight cap being full) per second."""
    return f"can't keep up: {sent:.0f} of {sent + saturated:.0f} per second sent"


def status_lines(interval: Tally, seconds: float, sent: int, total: Tally,
                 snapshots: Sequence[Snapshot], elapsed: float, saturated: int = 0, shared: bool = False) -> list[str]:
    """The live status: requests/s by status code and latency quantiles over the last
    ``seconds`` (``interval``, ``sent`` requests, ``saturated`` arrivals not sent), each
    provider's share of the admitted requests so far (``total``), its breaker state and
    cooldown left, and the bucket's tokens (from ``snapshots``: the gateway's, or one per
    replica; then each provider's states are counted over the replicas, its longest cooldown
    is shown, and the tokens are summed, or, with ``shared``, the one bucket they all admit
    through, ``limiter.backend = "redis"``, is shown once, as the latest snapshot read it). With LLM
    traffic in the run so far (:func:`llm_traffic` of ``total``), ``stream_error`` is always
    among the codes, and a fourth line gives the streams' time to first token and the output
    tokens per second over the last ``seconds``. With clients that time out or retry (user
    requests in ``total``), a line gives the user requests that ended over the last
    ``seconds``, per second, their goodput and attempts per request."""
    per_second = (lambda n: n / seconds) if seconds > 0 else (lambda n: 0.0)
    llm = llm_traffic(total)
    rates = "  ".join(f"{code_name(code)} {per_second(interval.count([code])):.0f}/s"
                      for code in _codes(interval, llm))
    if saturated:
        rates += f"  ({cannot_keep_up(per_second(sent), per_second(saturated))})"
    admitted = total.admitted()
    providers = []
    for name in snapshots[0].providers:
        text = f"{name} {_percent(total.admitted(name), admitted)} {breaker_states(snapshots, name)}"
        cooldown = max(s.providers[name].cooldown_left for s in snapshots)
        if cooldown > 0:
            text += f" {cooldown:.1f}s"
        providers.append(text)
    if shared:  # one bucket in Redis: each replica's snapshot holds its last answer
        latest = max(snapshots, key=lambda s: s.at)
        tokens = f"{latest.tokens:.0f}/{latest.burst:.0f}"
        if len(snapshots) > 1:
            tokens += f" shared by {len(snapshots)} replicas"
    else:
        tokens = f"{sum(s.tokens for s in snapshots):.0f}/{sum(s.burst for s in snapshots):.0f}"
        if len(snapshots) > 1:
            tokens += f" in {len(snapshots)} replicas"
    quantiles = "  ".join(f"p{round(q * 100)} {seconds_text(interval.latency.quantile(q))}" for q in QUANTILES)
    lines = [
        f"{elapsed:6.1f}s  offered {per_second(sent):.0f}/s  {rates}",
        "        " + "   ".join(providers),
        f"        tokens {tokens}  latency {quantiles}",
    ]
    if llm:
        lines.append(f"        ttft {_llm_quantiles(interval.ttft)}  "
                     f"output tokens {per_second(interval.output_tokens):.0f}/s")
    if total.users:
        users = interval.users
        ended = sum(users[outcome] for outcome in USER_OUTCOMES)
        lines.append("        " + _users(f"{per_second(ended):.0f}/s", users["ok"], ended, users["attempts"]))
    return lines


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """The final summary of a run, from the JSON document ``gwlab run --json`` writes."""
    workload = result["scenario"]["workload"]
    asked = (f"requested {workload['rate']:g}/s" if workload["mode"] == "open"
             else f"{workload['clients']} clients")
    if any("workload" in event for event in result["scenario"].get("events", ())):
        asked += " at the start, then as scripted"
    achieved = result["rates"]["offered"]
    codes = "  ".join(f"{code} {n}" for code, n in result["codes"].items()) or "none"
    latency = result["latency"]
    availability, goodput = result["availability"], result["goodput"]
    lines = [
        f"duration {result['duration']:.1f}s  offered {result['offered']} "
        f"({'-' if achieved is None else f'{achieved:.0f}'}/s, {asked})  admitted {result['admitted']}",
        f"codes {codes}",
        f"availability {'-' if availability is None else f'{availability:.1%}'}  "
        f"goodput {'-' if goodput is None else f'{goodput:.1%}'}",
        "latency " + "  ".join(f"{key} {seconds_text(latency[key])}" for key in ("p50", "p95", "p99", "mean", "max")),
    ]
    llm = [f"{name} " + "  ".join(f"{key} {seconds_text(result[field][key])}" for key in _LLM_KEYS)
           for field, name in (("ttft", "ttft"), ("time_per_output_token", "time per output token"))
           if field in result]
    if "output_tokens" in result:
        tokens = result["output_tokens"]
        rate = "-" if tokens["per_second"] is None else f"{tokens['per_second']:.0f}"
        llm.append(f"output tokens {tokens['total']} ({rate}/s)")
    if llm:
        lines.append("  ".join(llm))
    if "user_requests" in result:
        users = result["user_requests"]
        counts = "  ".join(f"{outcome} {n}" for outcome, n in users["outcomes"].items())
        wasted = f"  wasted {users['wasted']}" if "wasted" in users else ""
        lines.append(f"{_users(str(users['offered']), users['outcomes']['ok'], users['offered'], users['attempts'])}"
                     f"  {counts}{wasted}")
    if result.get("saturated"):
        cap = workload.get("max_in_flight", config.MAX_IN_FLIGHT)
        lines.insert(2, f"{cannot_keep_up(result['achieved_offered_rate'], result['saturated'] / result['duration'])}"
                        f"  ({result['saturated']} arrivals not sent: the generator was saturated at {cap} requests in flight)")
    for name, p in result["providers"].items():
        share = "-" if p["share"] is None else f"{p['share']:.1%}"
        outcomes = "  ".join(f"{code} {n}" for code, n in p["codes"].items())
        lines.append(f"{name}  share {share}  {outcomes}  trips {p['trips']}  "
                     f"fallbacks {p['fallbacks']}  state {p['state']}")
    return lines


class LiveView:
    """Writes status updates to ``out``: redrawn in place when ``redraw`` (a terminal), else
    each update as one plain line."""

    def __init__(self, out: TextIO, redraw: bool) -> None:
        self.out = out
        self.redraw = redraw
        self._drawn = 0

    def show(self, lines: Sequence[str]) -> None:
        if self.redraw:
            # Back to the first line drawn last time, clear to the end of the screen, redraw.
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.out.write(up + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            self.out.write(SEPARATOR.join(line.strip() for line in lines) + "\n")
        self.out.flush()

    def print(self, lines: Sequence[str]) -> None:
        """Write ``lines`` below the live status, which is not redrawn over them."""
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = 0
