"""The Grafana dashboard (``dashboards/gwlab.json``) is a dashboard JSON model Grafana imports
as is, and every query of every panel returns data from a real Prometheus scraping two
replicas (``gwlab.replicas``, labelled ``replica`` by the scrape configuration gwlab writes for
them) under real clients' traffic; so
does every recording rule of ``prometheus/rules.yml`` that this traffic gives something to
record."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
from pathlib import Path

import aiohttp
import pytest

from gwlab import config
from gwlab.providers import Outcome
from gwlab.replicas import Replicas
from tests.prometheus import SCRAPE_INTERVAL, prometheus
from tests.support import CHAT, failing_at_once, handle, readme_table, serving

pytestmark = pytest.mark.timeout(120)

DASHBOARD = json.loads((Path(__file__).resolve().parent.parent / "dashboards" / "gwlab.json").read_text())
GRAFANA_VARIABLES = {
    "$__rate_interval": f"{4 * SCRAPE_INTERVAL:g}s",
    "$__interval": f"{SCRAPE_INTERVAL:g}s",
    "$__range": "1m",
    "$replica": ".*",
}
"""Grafana's variables as Grafana would fill them for this Prometheus: ``$__rate_interval``
is at least four scrape intervals, ``$replica`` "All" (the variable's ``allValue``)."""


def panels() -> list[dict]:
    """Every panel that draws something (rows only group them)."""
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title and target, PromQL with Grafana's variables filled in) of every target."""
    pattern = re.compile("|".join(re.escape(v) for v in sorted(GRAFANA_VARIABLES, key=len, reverse=True)))
    return [(f"{p['title']} / {t['refId']}", pattern.sub(lambda m: GRAFANA_VARIABLES[m.group()], t["expr"]))
            for p in panels() for t in p["targets"]]


def test_the_dashboard_is_a_grafana_dashboard_json_model():
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 36
    assert DASHBOARD["uid"] == "gwlab" and DASHBOARD["title"] == "gwlab"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["replica"]["query"]["query"] == "label_values(gwlab_requests_total, replica)"
    assert variables["replica"]["allValue"] == GRAFANA_VARIABLES["$replica"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"] == p["datasource"], p["title"]
            assert set(re.findall(r"\$\w+", t["expr"])) <= set(GRAFANA_VARIABLES), t["expr"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_the_dashboard_shows_what_the_readme_says():
    text = json.dumps(DASHBOARD)
    for metric in ("gwlab_requests_total", "gwlab_provider_requests_total", "gwlab_breaker_state",
                   "gwlab_breaker_transitions_total", "gwlab_tokens_total", "gwlab_request_duration_seconds_bucket",
                   "gwlab_time_to_first_token_seconds_bucket"):
        assert metric in text, metric
    exprs = [e for _, e in queries()]
    assert any("by (replica" in e for e in exprs) and any("by (code)" in e for e in exprs)
    assert any('gwlab_breaker_transitions_total{to_state="open"' in e for e in exprs)


SCENARIO = config.from_dict({
    "providers": {
        "p1": {"weight": 70, "latency": 0.01, "ttft": 0.005, "decode_rate": 1000.0, "output_tokens": 5.0},
        "p2": {"weight": 30, "latency": 0.01, "error_rate": 0.5},
    },
    "breaker": {"failure_threshold": 1, "base_delay": 0.05},
})
"""Two providers: p1 streams 5 tokens, p2 fails every other call behind a breaker that opens
on a failure and half-opens 50 ms later: openings every second."""
CLIENTS = 3
"""Clients per replica, each sending its next request when the last is answered."""


async def client(url: str, stop: asyncio.Event) -> None:
    """Requests until ``stop``, each on a connection of its own (the kernel spreads them over
    the replicas): every other one a stream, each read to its end."""
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(force_close=True)) as http:
        for i in itertools.count():
            if stop.is_set():
                return
            async with http.post("/v1/chat/completions", json={**CHAT, "stream": i % 2 == 0}) as r:
                await r.read()


RULES = Path(__file__).resolve().parent.parent / "prometheus" / "rules.yml"
NOT_RECORDED_HERE = {
    "job:gwlab_retry_budget_refused:ratio_rate1m": "the gateway does not retry: 0 / 0",
    "job_provider:gwlab_provider_rate_limited:rate1m": "no provider answers 429",
    "job_provider:gwlab_stream_errors:rate1m": "no stream fails",
}
"""Recording rules that have nothing to record from this traffic, and why."""


def recorded_names() -> list[str]:
    return re.findall(r"- record: (\S+)", RULES.read_text(encoding="utf-8"))


async def evaluate(folder: Path) -> dict[str, list[dict]]:
    """Every panel's query, and every recording rule's series, as Prometheus answers them
    while it scrapes two replicas under traffic (and evaluates the rules)."""
    replicas = Replicas(SCENARIO, 1, 2)
    await replicas.start("127.0.0.1", 0, 0)
    try:
        async with prometheus(folder, replicas.metrics_ports, RULES) as prom:
            stop = asyncio.Event()
            clients = [asyncio.create_task(client(replicas.url, stop)) for _ in range(2 * CLIENTS)]
            try:
                # 8 scrapes of each replica under traffic: the 4 s rate windows and the 1 min
                # increases have samples to work on.
                await prom.wait_for_scrapes(2 * 8, 30 * SCRAPE_INTERVAL)
                return {name: await prom.query(expr) for name, expr in [*queries(), *((n, n) for n in recorded_names())]}
            finally:
                stop.set()
                await asyncio.gather(*clients)
    finally:
        await replicas.stop()


def test_every_panel_query_and_recording_rule_returns_data_from_two_replicas(tmp_path):
    results = asyncio.run(evaluate(tmp_path))
    empty = [name for name, result in results.items()
             if not any(math.isfinite(float(s["value"][1])) for s in result)]
    assert sorted(empty) == sorted(NOT_RECORDED_HERE)
    # A query keeps the replicas apart unless it sums them: by other labels, or all of them.
    per_replica = [name for name, expr in queries()
                   if "by (replica" in expr or "sum without" in expr or not re.search(r"\bsum\b", expr)]
    assert len(per_replica) == 8
    for name in per_replica:
        assert {s["metric"]["replica"] for s in results[name]} == {"0", "1"}, name
    openings = {s["metric"]["provider"]: float(s["value"][1]) for s in results["Breaker openings per minute / A"]}
    assert openings["p2"] > 0 and openings["p1"] == 0


def test_an_opening_between_two_scrapes_is_counted_though_no_scrape_sees_it(tmp_path):
    """Why the README and the dashboard count openings from the transitions counter: a
    breaker that opens and recovers between two scrapes never shows ``open`` in the state
    gauge, and the README's openings query still counts it."""
    t = [0.0]
    openings = next(q for n, q, _ in readme_table("The PromQL for each number") if n == "breaker openings per minute")

    async def main():
        async with serving(failing_at_once(), clock=lambda: t[0]) as (gw, _):
            async with prometheus(tmp_path, [gw.metrics_port]) as prom:
                await prom.wait_for_scrapes(1, 20 * SCRAPE_INTERVAL)
                # With no await in between, no scrape can come: p1 fails and opens for 1 s;
                # past its cooldown a probe succeeds and it is healthy again.
                router = gw.router
                router.complete(handle(router, 0.0), 0.0, Outcome.ERROR)
                t[0] = 1.5
                router.complete(handle(router, 1.5), 1.5, Outcome.SUCCESS)
                await prom.wait_for_scrapes(2, 20 * SCRAPE_INTERVAL)
                return (await prom.query(openings),
                        await prom.value('max_over_time(gwlab_breaker_state{provider="p1",state="open"}[1m])'),
                        await prom.value('gwlab_breaker_state{provider="p1",state="healthy"}'))

    counted, seen_open, healthy = asyncio.run(main())
    assert [s["metric"] for s in counted] == [{"provider": "p1"}]
    assert float(counted[0]["value"][1]) >= 1
    assert (seen_open, healthy) == (0, 1)
