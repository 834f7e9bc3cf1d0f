"""The Prometheus metrics: scraped over HTTP, parsed with prometheus_client's own parser and
checked against what the test sent; the exposition passes ``promtool check metrics``; values
that depend on time are computed at scrape time (a fake clock moves them, no traffic).
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import subprocess

import aiohttp
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from gwlab import config
from gwlab.metrics import BUCKETS, FAMILIES, Buckets
from gwlab.providers import Outcome
from gwlab.server import Gateway
from tests.conftest import require_tool
from tests.support import CHAT, failing_at_once, serving

STATES = ("healthy", "failing", "open", "half_open")


async def scrape(gw: Gateway) -> tuple[str, dict[tuple[str, frozenset], float]]:
    """The exposition text and its samples keyed by (name, labels)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.metrics_url) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=")
            text = await r.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return text, samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def seed_with_no_latency(**limiter: float) -> config.Scenario:
    """The seed's three providers (weights and error rates) with zero latency."""
    providers = {name: {"weight": weight, "latency": 0.0, "error_rate": errors}
                 for name, weight, _, errors in config.SEED_PROVIDERS}
    return config.from_dict({"providers": providers, "limiter": limiter})


def test_counters_equal_what_was_sent_and_promtool_accepts_the_exposition():
    t = [0.0]

    async def main():
        # 25 chat requests at one instant with a bucket of 20: 20 admitted, 5 rate limited.
        async with serving(seed_with_no_latency(burst=20), clock=lambda: t[0]) as (gw, http):
            sent: collections.Counter[tuple[int, str]] = collections.Counter()
            for _ in range(25):
                async with http.post("/v1/chat/completions", json=CHAT) as r:
                    sent[r.status, r.headers["x-gwlab-provider"]] += 1
            for path in ("/v1/chat/completions", "/nowhere"):
                async with http.post(path, json=[]) as r:
                    sent[r.status, r.headers["x-gwlab-provider"]] += 1
            text, samples = await scrape(gw)
        return sent, text, samples

    sent, text, samples = asyncio.run(main())
    assert sum(n for (status, _), n in sent.items() if status in (200, 502, 504)) == 20
    assert sent[429, "none"] == 5 and sent[400, "none"] == 1 and sent[404, "none"] == 1
    counted = {(int(dict(labels)["code"]), dict(labels)["provider"]): v
               for (name, labels), v in samples.items() if name == "gwlab_requests_total" and v}
    assert counted == dict(sent)
    assert value(samples, "gwlab_rate_limited_total") == 5
    assert value(samples, "gwlab_request_duration_seconds_count", provider="none") == 5
    for name, *_ in config.SEED_PROVIDERS:
        answered = sum(n for (status, provider), n in sent.items() if provider == name)
        outcomes = {o: value(samples, "gwlab_provider_requests_total", provider=name, outcome=o)
                    for o in ("success", "error", "timeout")}
        assert outcomes == {"success": sent[200, name], "error": sent[502, name], "timeout": 0}
        assert value(samples, "gwlab_request_duration_seconds_count", provider=name) == answered
        assert value(samples, "gwlab_provider_request_duration_seconds_count", provider=name) == answered
        assert value(samples, "gwlab_provider_request_duration_seconds_bucket", provider=name, le="+Inf") == answered
        assert value(samples, "gwlab_provider_weight", provider=name) == gw_weight(name)
    assert value(samples, "gwlab_limiter_tokens") == 0
    assert value(samples, "gwlab_in_flight_requests") == 0

    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def gw_weight(name: str) -> float:
    return next(w for n, w, *_ in config.SEED_PROVIDERS if n == name)


def test_every_known_series_exists_from_the_start():
    async def main():
        async with serving(seed_with_no_latency()) as (gw, http):
            return (await scrape(gw))[1]

    samples = asyncio.run(main())
    for name, *_ in config.SEED_PROVIDERS:
        for code in ("200", "502", "504"):
            assert value(samples, "gwlab_requests_total", code=code, provider=name) == 0
        for state in STATES:
            assert value(samples, "gwlab_breaker_state", provider=name, state=state) == (state == "healthy")
        assert value(samples, "gwlab_breaker_cooldown_seconds", provider=name) == 0
        assert value(samples, "gwlab_fallback_total", provider=name) == 0
        assert value(samples, "gwlab_breaker_transitions_total", provider=name,
                     from_state="open", to_state="half_open") == 0
    assert value(samples, "gwlab_requests_total", code="429", provider="none") == 0
    assert value(samples, "gwlab_limiter_tokens") == config.BURST
    for limit in ("requests", "tokens"):
        assert value(samples, "gwlab_limiter_rejected_total", limit=limit) == 0
    assert not any(name == "gwlab_limiter_tpm_tokens" for name, _ in samples)  # the limit is off


def test_a_scrape_asking_for_some_names_gets_those_series_and_no_others():
    """Prometheus's filtered scrape, ``/metrics?name[]=...``: prometheus_client's handler keeps
    the collectors that describe those names, gwlab's own and the process's alike."""
    asked = ["gwlab_requests_total", "gwlab_request_duration_seconds_count", "gwlab_limiter_tokens",
             "process_open_fds"]

    async def main():
        async with serving(seed_with_no_latency(burst=2), clock=lambda: 0.0) as (gw, http):
            for _ in range(3):
                async with http.post("/v1/chat/completions", json=CHAT) as r:
                    await r.read()
            async with aiohttp.ClientSession() as scraper:
                async with scraper.get(gw.metrics_url, params=[("name[]", name) for name in asked]) as r:
                    assert r.status == 200
                    text = await r.text()
            return text, (await scrape(gw))[1]

    text, everything = asyncio.run(main())
    families = list(text_string_to_metric_families(text))
    assert sorted(f.name for f in families) == ["gwlab_limiter_tokens", "gwlab_request_duration_seconds",
                                                "gwlab_requests", "process_open_fds"]
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}
    assert {name for name, _ in samples} == set(asked)
    assert {key: v for key, v in samples.items() if key[0] != "process_open_fds"} == {
        key: v for key, v in everything.items() if key[0] in asked[:3]}
    assert sum(v for (name, _), v in samples.items() if name == "gwlab_requests_total") == 3
    assert value(samples, "gwlab_requests_total", code="429", provider="none") == 1
    assert value(samples, "gwlab_limiter_tokens") == 0


def test_the_collector_describes_every_family_a_scrape_shows():
    async def main():
        async with serving(seed_with_no_latency(tpm=1000)) as (gw, _):  # the tokens limit's gauge too
            return (await scrape(gw))[0]

    shown = {f.name for f in text_string_to_metric_families(asyncio.run(main())) if f.name.startswith("gwlab_")}
    assert shown == set(FAMILIES)


def test_idle_breaker_half_opens_by_time_alone():
    t = [0.0]
    scenario = failing_at_once()

    async def main():
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            async with http.post("/v1/chat/completions", json=CHAT) as r:
                assert r.status == 502
            before = (await scrape(gw))[1]
            t[0] = 1.5  # past the 1 s cooldown, with no traffic in between
            after = (await scrape(gw))[1]
        return before, after

    before, after = asyncio.run(main())
    assert {s: value(before, "gwlab_breaker_state", provider="p1", state=s) for s in STATES} == \
        {"healthy": 0, "failing": 0, "open": 1, "half_open": 0}
    assert value(before, "gwlab_breaker_cooldown_seconds", provider="p1") == 1.0
    assert value(before, "gwlab_breaker_transitions_total", provider="p1", from_state="healthy", to_state="open") == 1
    assert value(before, "gwlab_breaker_transitions_total", provider="p1",
                 from_state="open", to_state="half_open") == 0
    assert {s: value(after, "gwlab_breaker_state", provider="p1", state=s) for s in STATES} == \
        {"healthy": 0, "failing": 0, "open": 0, "half_open": 1}
    assert value(after, "gwlab_breaker_cooldown_seconds", provider="p1") == 0.0
    assert value(after, "gwlab_breaker_transitions_total", provider="p1",
                 from_state="open", to_state="half_open") == 1


def test_tokens_and_weights_are_read_at_scrape_time():
    t = [0.0]

    async def main():
        async with serving(seed_with_no_latency(rate=1000, burst=10), clock=lambda: t[0]) as (gw, http):
            for _ in range(3):
                async with http.post("/v1/chat/completions", json=CHAT) as r:
                    assert r.status in (200, 502)
            first = (await scrape(gw))[1]
            t[0] = 0.002  # two tokens refill at 1000/s
            gw.configure({"providers": {"p2": {"weight": 0}}})
            second = (await scrape(gw))[1]
        return first, second

    first, second = asyncio.run(main())
    assert value(first, "gwlab_limiter_tokens") == 7
    assert value(second, "gwlab_limiter_tokens") == 9
    assert value(first, "gwlab_provider_weight", provider="p2") == 20
    assert value(second, "gwlab_provider_weight", provider="p2") == 0


def test_in_flight_gauge_follows_requests():
    async def main():
        scenario = config.from_dict({"providers": {"p1": {"latency": 0.3}}})
        async with serving(scenario) as (gw, http):
            call = asyncio.create_task(http.post("/v1/chat/completions", json=CHAT))
            for _ in range(200):
                if gw.snapshot().in_flight:
                    break
                await asyncio.sleep(0.01)
            during = value((await scrape(gw))[1], "gwlab_in_flight_requests")
            response = await call
            assert response.status == 200
            response.release()
            after = value((await scrape(gw))[1], "gwlab_in_flight_requests")
        return during, after

    assert asyncio.run(main()) == (1, 0)


def test_two_gateways_in_one_process_keep_separate_registries():
    async def main():
        scenario = seed_with_no_latency()
        async with serving(scenario) as (a, http_a), serving(scenario) as (b, _):
            assert a.metrics.registry is not b.metrics.registry
            for _ in range(2):
                async with http_a.post("/v1/chat/completions", json=CHAT) as r:
                    assert r.status in (200, 502)
            samples_a, samples_b = (await scrape(a))[1], (await scrape(b))[1]
        return samples_a, samples_b

    samples_a, samples_b = asyncio.run(main())

    def answered(samples):
        return sum(v for (name, labels), v in samples.items() if name == "gwlab_requests_total")

    assert (answered(samples_a), answered(samples_b)) == (2, 0)


def test_buckets_expose_what_prometheus_clients_histogram_would():
    """The request path counts in :class:`Buckets`; the same observations fed to the
    library's own ``Histogram`` give the same exposed samples, bounds included (a value
    equal to a bound counts under that ``le``)."""
    observed = [0.0, 0.004, 0.005, 0.0050001, 0.1, 0.1, 0.3, 2.0, 9.99, 10.0, 10.5, 400.0, *BUCKETS]
    buckets = Buckets()
    registry = CollectorRegistry()
    reference = Histogram("h_seconds", "reference", buckets=BUCKETS, registry=registry)
    for v in observed:
        buckets.observe(v)
        reference.observe(v)
    family = HistogramMetricFamily("h_seconds", "reference")
    family.add_metric([], buckets.cumulative(), buckets.sum)
    ours = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    theirs = {(s.name, s.labels.get("le")): s.value
              for m in registry.collect() for s in m.samples if not s.name.endswith("_created")}
    assert ours == theirs
    assert ours["h_seconds_bucket", "0.005"] == 4 and ours["h_seconds_count", None] == len(observed)


def test_an_answers_durations_count_in_its_providers_histograms_as_buckets_observe_counts_them():
    """Metrics.completed writes Buckets.observe out for its two histograms: the same counts
    and sums, a value on a bound included."""
    gw = Gateway(seed_with_no_latency())
    route = gw.router.route(0.0)
    gw.router.complete(route, 0.0, route.call.outcome)
    observed = [0.0, 0.004, 0.005, 0.0050001, 0.1, 2.0, 10.0, 400.0, *BUCKETS]
    durations, calls = Buckets(), Buckets()
    for v in observed:
        gw.metrics.completed(route, Outcome.SUCCESS, v, v / 3, 3, 9)
        durations.observe(v)
        calls.observe(v / 3)
    name = route.upstream.name
    for ours, expected in ((gw.metrics.durations[name], durations), (gw.metrics.provider_durations[name], calls)):
        assert (ours.counts, ours.sum) == (expected.counts, expected.sum)
    assert gw.metrics.tokens[name, "prompt"] == 3 * len(observed)


def test_index_page_links_to_metrics():
    async def main():
        async with serving(seed_with_no_latency()) as (gw, _):
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{gw.metrics_port}/") as r:
                    return r.status, r.content_type, await r.text()

    status, content_type, text = asyncio.run(main())
    assert (status, content_type) == (200, "text/html")
    assert '<a href="/metrics">' in text


def test_the_tokens_limit_shows_its_bucket_and_its_429s_apart_from_the_requests_limits():
    t = [0.0]

    async def main():
        # Each request reserves 3 + 40 tokens and uses 3 + 9 of them (the fixed reply).
        scenario = config.from_dict({"providers": {"p1": {"latency": 0.0}}, "limiter": {"burst": 3, "tpm": 60}})
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            codes = []
            for _ in range(4):  # 60 -> 48 -> 36 -> 24 left: the third is short of tokens
                async with http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 40}) as r:
                    codes.append((r.status, (await r.json()).get("error", {}).get("code")))
            t[0] = 30.0  # both buckets are full again
            # Three admitted, each reserving 3 + 2 and using as much (the fixed reply cut to its
            # cap); the fourth is out of request tokens.
            for _ in range(4):
                async with http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2}) as r:
                    codes.append((r.status, (await r.json()).get("error", {}).get("code")))
            samples = (await scrape(gw))[1]
            t[0] = 40.0
            later = (await scrape(gw))[1]
        return codes, samples, later

    codes, samples, later = asyncio.run(main())
    assert [c for c in codes if c[0] == 429] == [(429, "rate_limit_tokens"), (429, "rate_limit_tokens"),
                                               (429, "rate_limit_requests")]
    assert value(samples, "gwlab_limiter_rejected_total", limit="tokens") == 2
    assert value(samples, "gwlab_limiter_rejected_total", limit="requests") == 1
    assert value(samples, "gwlab_rate_limited_total") == 3  # every 429, as before
    assert value(samples, "gwlab_limiter_tpm_tokens") == 60 - 3 * 5
    assert value(later, "gwlab_limiter_tpm_tokens") == 55  # 10 s at a token a second
    assert value(samples, "gwlab_limiter_tokens") == 0


def test_metrics_negotiate_openmetrics_and_gzip_and_show_the_process():
    """prometheus_client's handler serves /metrics: OpenMetrics to a scraper that asks for it
    (ending ``# EOF``), gzip to one that accepts it, the text format otherwise; the process
    and platform collectors are in the gateway's registry. promtool checks the text format
    (it reads no other); prometheus_client's strict OpenMetrics parser reads the OpenMetrics."""

    async def get(gw: Gateway, **headers: str) -> tuple[str, str, bytes]:
        async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("Accept-Encoding",)) as http:
            async with http.get(gw.metrics_url, headers=headers) as r:
                assert r.status == 200
                return r.headers["Content-Type"], r.headers.get("Content-Encoding", ""), await r.read()

    async def main():
        async with serving(seed_with_no_latency()) as (gw, _):
            return (await get(gw), await get(gw, Accept="application/openmetrics-text; version=1.0.0"),
                    await get(gw, **{"Accept-Encoding": "gzip"}))

    (text_type, text_coding, text), (om_type, om_coding, om), (gz_type, gz_coding, gz) = asyncio.run(main())
    assert text_type.startswith("text/plain; version=0.0.4") and text_coding == ""
    assert om_type.startswith("application/openmetrics-text; version=1.0.0") and om_coding == ""
    assert om.endswith(b"# EOF\n") and not text.endswith(b"# EOF\n")
    assert gz_type == text_type and gz_coding == "gzip"
    plain = gzip.decompress(gz).decode()
    samples = {s.name for family in text_string_to_metric_families(plain) for s in family.samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
            "python_info", "gwlab_requests_total"} <= samples
    assert {s.name for f in openmetrics_families(om.decode()) for s in f.samples} >= {
        "process_cpu_seconds_total", "python_info", "gwlab_requests_total"}
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=text.decode(), capture_output=True, text=True,
                            timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
