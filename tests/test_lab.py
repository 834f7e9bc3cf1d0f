"""The notebook layer without a browser: a lab's life cycle, its controls, its charts."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import re
import socket
import threading

import numpy as np
import prometheus_client
import pytest

import gwlab.lab
from gwlab import config, plots, workload
from gwlab.config import ConfigError, Scenario
from gwlab.lab import controls
from gwlab.lab.loop import LoopThread
from gwlab.stats import RELATIVE_ERROR
from gwlab.timeline import check_reservations
from tests.support import port_is_free
from tests.test_config import BAD_HOSTS

FREE = {"port": 0, "metrics_port": 0}


def lab_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gwlab-lab-")]


@pytest.fixture(autouse=True)
def no_lab_left():
    yield
    gwlab.lab.stop()
    assert gwlab.lab.current() is None
    assert lab_threads() == []


@pytest.fixture
def lab():
    return gwlab.lab.start(clients=20, **FREE)


def test_start_twice_is_one_lab_and_stop_twice_is_safe(lab):
    assert gwlab.lab.start(clients=20, **FREE) is lab
    assert gwlab.lab.current() is lab
    assert len(lab_threads()) == 1
    ports = (lab.port, lab.metrics_port)
    lab.stop()
    lab.stop()
    gwlab.lab.stop()
    assert not lab.running and repr(lab) == "gwlab lab (stopped)"
    assert lab_threads() == []
    assert all(port_is_free(p) for p in ports)
    with pytest.raises(RuntimeError, match="this lab is stopped"):
        lab.run_for(0.1)


def test_start_with_other_arguments_replaces_the_running_lab(lab):
    old_port = lab.port
    new = gwlab.lab.start(clients=30, **FREE)
    assert new is not lab and not lab.running and new.running
    assert gwlab.lab.current() is new
    assert len(lab_threads()) == 1
    assert port_is_free(old_port)
    assert new.scenario.workload.clients == 30


def test_taken_ports_fall_back_to_free_ones_and_the_handle_says_so():
    with socket.socket() as one, socket.socket() as two:
        for taken in (one, two):
            taken.bind(("127.0.0.1", 0))
            taken.listen()
        port, metrics_port = one.getsockname()[1], two.getsockname()[1]
        lab = gwlab.lab.start(clients=1, port=port, metrics_port=metrics_port)
        assert lab.running and lab.port not in (0, port) and lab.metrics_port not in (0, metrics_port)
        assert lab.url == f"http://127.0.0.1:{lab.port}"
        assert f"(port {port} was in use)" in repr(lab) and f"(port {metrics_port} was in use)" in repr(lab)
        assert lab.run_for(0.5)["offered"] > 0


def test_each_lab_has_its_own_registry_and_the_global_one_stays_clean(lab):
    first = lab.gateway.metrics.registry
    lab.run_for(0.3)
    lab.stop()
    second = gwlab.lab.start(clients=20, **FREE)
    assert second.gateway.metrics.registry is not first
    names = [m.name for m in second.gateway.metrics.registry.collect()]
    assert names.count("gwlab_requests") == 1
    assert not [m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("gwlab")]


def test_a_control_change_reaches_the_gateway_and_its_traffic(lab):
    scenario = lab.configure({"providers": {"p1": {"weight": 0}}})
    assert scenario.provider("p1").weight == 0
    assert lab.snapshot().providers["p1"].weight == 0
    lab.run_for(0.3)  # calls p1 had in flight (0.1 s each) end here
    after = lab.run_for(1.0)
    assert after["providers"]["p1"]["requests"] == 0
    assert after["providers"]["p2"]["requests"] > 0


def test_a_bad_change_is_refused_with_the_config_message_and_changes_nothing(lab):
    before = lab.scenario
    with pytest.raises(ConfigError, match=r"lab.configure: providers.\*.weight = \[0.0, 0.0, 0.0\]: "
                                          r"expected at least one weight > 0"):
        lab.configure({"providers": {name: {"weight": 0} for name in ("p1", "p2", "p3")}})
    assert lab.scenario == before


def test_workload_changes_apply_to_the_in_process_clients():
    fast = config.merge(Scenario(), {"providers": {name: {"latency": 0.05} for name in ("p1", "p2", "p3")},
                                     "workload": {"clients": 20}})
    lab = gwlab.lab.start(fast, **FREE)
    lab.configure({"workload": {"clients": 5}})
    lab.run_for(0.3)  # a retiring client ends with its request in flight (0.05 s)
    assert lab.clients.running == 5
    lab.configure({"workload": {"clients": 8}})
    assert lab.clients.running == 8
    lab.configure({"workload": {"mode": "open", "rate": 200}})
    lab.run_for(0.5)
    assert lab.clients.running == 0
    opened = lab.run_for(1.0)
    # Poisson arrivals at 200/s for 1 s: 200 expected, sd 14; 6 sd either side.
    assert 115 < opened["offered"] < 285


def test_reset_restores_the_starting_scenario_and_empties_the_history(lab):
    lab.configure({"limiter": {"rate": 50}, "breaker": {"failure_threshold": 7}})
    lab.run_for(1.0)
    assert len(lab.timeseries()) >= 1
    assert lab.reset() == lab.initial == lab.scenario
    assert len(lab.timeseries()) == 0
    assert lab.snapshot().tokens == pytest.approx(lab.initial.limiter.burst, abs=50)


def test_scripted_events_happen_at_their_time():
    scenario = Scenario().to_dict() | {"events": [{"at": 0.3, "providers": {"p3": {"weight": 0}}}]}
    lab = gwlab.lab.start(scenario, **FREE)
    assert lab.scenario.provider("p3").weight == 10
    lab.run_for(0.6)
    assert lab.scenario.provider("p3").weight == 0


def test_async_variants_leave_the_callers_loop_free():
    async def main():
        lab = await gwlab.lab.start_async(clients=10, **FREE)
        assert await gwlab.lab.start_async(clients=10, **FREE) is lab
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        summary = await lab.run_for_async(0.5)
        ticker.cancel()
        await lab.configure_async({"limiter": {"burst": 10}})
        await gwlab.lab.stop_async()
        return lab, summary, ticks

    lab, summary, ticks = asyncio.run(main())
    assert summary["offered"] > 0 and ticks >= 5
    assert not lab.running and lab.scenario.limiter.burst == 10


def test_summary_shows_as_lines(lab):
    summary = lab.run_for(0.5)
    assert summary["mode"] == "live" and summary["clients"] == 20
    from IPython.lib.pretty import pretty

    text = pretty(summary)
    # The window is the one measured (0.5 s, more on a machine too busy to wake the loop in time).
    assert re.match(r"duration \d+\.\ds  offered \d+ ", text) and "\np1  share " in text


@pytest.fixture
def dashboard(lab):
    return lab.dashboard()


def test_chart_data_grows_while_a_cell_blocks(lab, dashboard):
    assert lab.dashboard() is dashboard
    before = len(dashboard.figure.data[0].x)
    lab.run_for(1.6)  # the main thread blocks; only the lab's loop thread can redraw
    grown = len(dashboard.figure.data[0].x)
    assert grown >= before + 2  # 0.5 s bins, redrawn every 0.3 s
    assert [t.name for t in dashboard.figure.data][:4] == ["200", "429", "502", "504"]
    assert "answers/s" in dashboard.status.value and "tokens" in dashboard.status.value


def test_a_view_opened_later_starts_from_the_charts_of_now(lab, dashboard):
    """A reloaded page builds its chart from the figure widget's synced state: it must be the
    figure as redrawn, not as first displayed, traces and data alike."""
    lab.configure({"providers": {name: {"error_rate": 1.0} for name in ("p1", "p2", "p3")}})
    lab.run_for(1.6)  # breakers open: the chart gains traces, and every trace more bins
    figure = dashboard.figure

    async def read():  # on the thread that redraws
        return figure.to_dict()["data"], figure._widget_data

    drawn, synced = lab.call(read())
    assert len(drawn[0]["x"]) >= 2
    assert [t.get("name") for t in synced] == [t.get("name") for t in drawn]
    assert [list(t.get("x", ())) for t in synced] == [list(t.get("x", ())) for t in drawn]


def test_paused_charts_stay_still_and_resume(lab, dashboard):
    dashboard.pause_button.click()
    assert dashboard.paused and dashboard.pause_button.description == "Resume charts"
    frozen = len(dashboard.figure.data[0].x)
    lab.run_for(1.2)
    assert len(dashboard.figure.data[0].x) == frozen
    dashboard.pause_button.click()
    lab.run_for(0.8)
    assert len(dashboard.figure.data[0].x) > frozen


def test_a_slider_changes_the_gateway(lab, dashboard):
    dashboard.controls["providers", "p1", "weight"].value = 0
    dashboard.controls["limiter", "rate"].value = 500
    assert lab.scenario.provider("p1").weight == 0
    assert lab.snapshot().rate == 500
    assert dashboard.error.value == ""


def test_a_reset_plays_the_scripted_events_again_from_then_and_a_run_for_across_it_is_refused():
    scenario = {"workload": {"clients": 2}, "events": [{"at": 0.5, "providers": {"p1": {"outage": "error"}}}]}
    lab = gwlab.lab.start(scenario, **FREE)
    try:
        lab.run_for(0.8)
        assert lab.scenario.provider("p1").outage == "error"
        lab.reset()
        assert lab.scenario.provider("p1").outage == "none"
        lab.run_for(0.8)
        assert lab.scenario.provider("p1").outage == "error"  # played again, 0.5 s after the reset
        resetting = threading.Timer(0.2, lab.reset)  # from another thread, as a button's callback
        resetting.start()
        with pytest.raises(RuntimeError, match="^lab.run_for: the lab was reset while it ran"):
            lab.run_for(0.6)
        resetting.join()
    finally:
        gwlab.lab.stop()


def test_a_refused_slider_shows_the_reason_and_goes_back(lab, dashboard):
    dashboard.controls["breaker", "base_delay"].value = 5
    dashboard.controls["breaker", "max_cooldown"].value = 2
    assert "refused: dashboard: breaker.max_cooldown = 2.0: expected a number &gt;= breaker.base_delay (5)" \
        in dashboard.error.value
    assert dashboard.controls["breaker", "max_cooldown"].value == 30
    assert lab.scenario.breaker.max_cooldown == 30
    # A change made since, from code, that fits: the refusal is old news.
    lab.configure({"breaker": {"base_delay": 1.0, "max_cooldown": 2.0}})
    assert dashboard.controls["breaker", "max_cooldown"].value == 2 and dashboard.error.value == ""


def test_code_changes_and_reset_move_the_sliders(lab, dashboard):
    lab.configure({"providers": {"p2": {"latency": 1.5}}, "workload": {"mode": "open", "rate": 100}})
    assert dashboard.controls["providers", "p2", "latency"].value == 1.5
    assert dashboard.controls["workload", "clients"].layout.display == "none"
    dashboard.reset_button.click()
    assert dashboard.controls["providers", "p2", "latency"].value == 0.5
    assert dashboard.controls["workload", "mode"].value == "closed"
    assert dashboard.controls["workload", "rate"].layout.display == "none"


def record_sources(lab, monkeypatch) -> list[str]:
    """The sources of every change the lab's gateway gets from now on."""
    sources = []
    configure = lab.gateway.configure

    def recording(patch, source):
        sources.append(source)
        return configure(patch, source)

    monkeypatch.setattr(lab.gateway, "configure", recording)
    return sources


def test_sliders_follow_code_and_scripted_events_without_sending_them_back(monkeypatch):
    scenario = Scenario().to_dict() | {"events": [{"at": 2.0, "providers": {"p3": {"error_rate": 0.005}}}]}
    lab = gwlab.lab.start(scenario, clients=5, **FREE)
    dashboard = lab.dashboard()
    sources = record_sources(lab, monkeypatch)
    error_rate = dashboard.controls["providers", "p3", "error_rate"]
    assert error_rate.value == 0.2  # the event is still to come
    lab.configure({"providers": {"p2": {"error_rate": 0.002, "latency": 4.0}}, "breaker": {"max_cooldown": 45.5}})
    lab.run_for(2.5)
    latency = dashboard.controls["providers", "p2", "latency"]
    assert dashboard.controls["providers", "p2", "error_rate"].value == 0.002
    assert latency.value == 4.0 and latency.max >= 4.0  # widened, not clamped to its range
    assert dashboard.controls["breaker", "max_cooldown"].value == 45.5
    assert error_rate.value == 0.005
    assert error_rate.readout_format == controls.READOUT
    # The browser hands every value it was given back: nothing reaches the gateway.
    for widget in dashboard.controls.values():
        widget.set_state({"value": widget.value})
    assert sources == ["lab.configure", "scenario: event at 2 s"]


def test_a_drag_lands_on_a_value_kept_to_a_few_digits(lab, dashboard, monkeypatch):
    sources = record_sources(lab, monkeypatch)
    cooldown = dashboard.controls["breaker", "max_cooldown"]
    cooldown.set_state({"value": 27.341812})  # a log slider dragged in the browser
    assert cooldown.value == lab.scenario.breaker.max_cooldown == 27.34
    error_rate = dashboard.controls["providers", "p1", "error_rate"]
    error_rate.set_state({"value": 0.011000000000000001})  # a linear step's float noise
    assert error_rate.value == lab.scenario.provider("p1").error_rate == 0.011
    assert sources == ["dashboard", "dashboard"]


def test_a_log_slider_holds_the_value_it_is_given():
    slider = controls.log_slider("max_cooldown", 30, 1, 64)
    assert slider.value == 30 and slider.step is None and not slider.continuous_update
    assert (slider.base, slider.min, slider.max) == (10, 0, 2)
    controls.show(slider, 500)
    assert slider.value == 500 and slider.max == 3

def test_callback_errors_land_in_the_output_widget(lab, dashboard, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom in a callback")

    monkeypatch.setattr(lab, "configure", broken)
    dashboard.controls["limiter", "burst"].value = 10
    assert any("RuntimeError: boom in a callback" in o.get("text", "") for o in dashboard.output.outputs)


def test_stopping_freezes_the_dashboard(lab, dashboard):
    lab.stop()
    assert dashboard.status.value == "<b>the lab is stopped</b>"
    assert all(w.disabled for w in dashboard.controls.values())
    bundle = dashboard._repr_mimebundle_()
    assert bundle["text/plain"] == "gwlab live dashboard (shown while the kernel runs)"
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_an_event_that_no_longer_fits_is_skipped_and_the_later_ones_still_apply(caplog):
    # The events come well after the start, so that run_for's window holds them however long a
    # loaded machine takes from the start to run_for (0.4 s after the start was too soon once).
    scenario = Scenario().to_dict() | {"events": [{"at": 1.5, "breaker": {"base_delay": 20.0}},
                                                  {"at": 1.7, "limiter": {"rate": 500.0}}]}
    lab = gwlab.lab.start(scenario, clients=5, **FREE)
    lab.configure({"breaker": {"max_cooldown": 10.0}})
    with caplog.at_level("WARNING", logger="gwlab.timeline"):
        summary = lab.run_for(2.2)
    assert lab.scenario.limiter.rate == 500.0 and lab.scenario.breaker.max_cooldown == 10.0
    assert summary["events_refused"] == 1
    assert [r.getMessage().split(": not applied")[0] for r in caplog.records] == ["event at 1.5 s: breaker.base_delay = 20.0"]


def test_run_for_counts_requests_sent_per_second_and_trips_once(lab):
    summary = lab.run_for(0.5)
    assert summary["achieved_offered_rate"] == pytest.approx(summary["offered"] / summary["duration"], rel=0.5)
    assert summary["trips"] == sum(p["trips"] for p in summary["providers"].values())


def test_run_for_summarises_the_streams_and_the_bins_get_their_ttft_and_tokens():
    """Five clients that always stream, to a provider whose first token comes after 0.05 s
    and whose answers are 6 tokens long."""
    scenario = {"breaker": {"enabled": False},
                "providers": {"p1": {"ttft": 0.05, "decode_rate": 100.0, "output_tokens": 6.0}},
                "workload": {"clients": 5, "stream_share": 1.0}}
    lab = gwlab.lab.start(scenario, **FREE)
    summary = lab.run_for(1.0)
    answered = summary["codes"]["200"]
    assert answered == summary["offered"] > 10  # 0.1 s a call: about 50
    for q in ("p50", "p99", "max"):
        assert summary["ttft"][q] >= 0.05 * (1 - RELATIVE_ERROR)  # late, never early
    assert summary["output_tokens"]["total"] == 6 * answered
    columns = lab.timeseries().columns()
    assert sum(columns["output_tokens"]) == 6 * sum(columns["200"]) > 0
    assert any(p50 is not None and p50 >= 0.05 * (1 - RELATIVE_ERROR) for p50 in columns["ttft_p50"])
    assert set(columns["stream_error"]) == {0}


def test_threads_starting_at_once_share_one_lab():
    barrier = threading.Barrier(8)
    labs = []

    def starter():
        barrier.wait()
        labs.append(gwlab.lab.start(clients=1, **FREE))

    threads = [threading.Thread(target=starter) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(labs) == 8 and all(lab is labs[0] for lab in labs)
    assert labs[0].running and gwlab.lab.current() is labs[0]
    assert len(lab_threads()) == 1


def test_threads_starting_and_stopping_at_random_leave_at_most_one_lab_and_no_port():
    seen = []
    errors = []

    def churn(seed: int):
        rng = random.Random(seed)
        try:
            for _ in range(6):
                roll = rng.random()
                if roll < 0.5:
                    seen.append(gwlab.lab.start(clients=rng.choice((1, 2)), **FREE))
                elif roll < 0.75:
                    gwlab.lab.stop()
                elif seen:
                    rng.choice(seen).stop()
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a start or stop never returned"
    assert errors == []
    running = [lab for lab in set(seen) if lab.running]
    assert len(running) <= 1 and len(lab_threads()) == len(running)
    assert gwlab.lab.current() is (running[0] if running else None)
    gwlab.lab.stop()
    assert lab_threads() == []
    assert all(port_is_free(p) for lab in seen for p in (lab.port, lab.metrics_port))


def test_gathered_async_starts_and_stops_share_one_lab_and_leak_nothing():
    async def main():
        same = await asyncio.gather(*(gwlab.lab.start_async(clients=1, **FREE) for _ in range(4)))
        assert all(lab is same[0] for lab in same) and len(lab_threads()) == 1
        mixed = await asyncio.gather(
            gwlab.lab.start_async(clients=1, **FREE), gwlab.lab.stop_async(),
            gwlab.lab.start_async(clients=2, **FREE), same[0].stop_async(),
            gwlab.lab.start_async(clients=3, **FREE), gwlab.lab.stop_async(),
            gwlab.lab.start_async(clients=2, **FREE))
        return [*same, *(lab for lab in mixed if lab is not None)]

    labs = asyncio.run(main())
    running = [lab for lab in set(labs) if lab.running]
    assert len(running) <= 1 and len(lab_threads()) == len(running)
    assert gwlab.lab.current() is (running[0] if running else None)
    gwlab.lab.stop()
    assert all(port_is_free(p) for lab in labs for p in (lab.port, lab.metrics_port))


def test_a_late_sampler_closes_bins_with_the_answers_of_their_own_time():
    """A busy kernel delays the lab's sampler; the bins it then closes late still count
    each request in the bin of its own time, so the chart shows no false stall."""
    from gwlab.lab.recorder import Recorder
    from gwlab.router import Snapshot

    now = 100.0
    recorder = Recorder(["p1"], lambda: now, bin_width=0.5, window=60.0)
    # 8 requests per bin for 2 s, each answered 0.125 s after it was sent; the sampler sleeps.
    for k in range(32):
        sent = 100.0 + k / 16
        now = sent
        recorder.sent()
        now = sent + 0.125
        recorder.answered(sent, now, 200, "p1")
    assert recorder.timeseries().bins == []
    snapshot = Snapshot(at=now, tokens=1000.0, burst=1000.0, rate=1000.0, in_flight=1, providers={})
    while recorder.next_edge() <= now:
        recorder.close(snapshot)
    bins = recorder.timeseries().bins
    assert [b.start for b in bins] == [0.0, 0.5, 1.0, 1.5]
    assert [b.offered for b in bins] == [8, 8, 8, 8]
    assert [b.admitted for b in bins] == [8, 8, 8, 8]
    assert [b.tally.count() for b in bins] == [6, 8, 8, 8]  # the first two answers came at 0.5 s
    assert recorder.current.tally.count() == 2  # the last two came at 2.0 s: the open bin's


def test_a_lab_with_llm_traffic_shows_its_controls_and_charts_and_the_seed_lab_does_not():
    scenario = {"providers": {"a": {"ttft": 0.2, "decode_rate": 50.0, "output_tokens": 20.0, "capacity": 4}},
                "workload": {"clients": 4, "stream_share": 0.5}}
    lab = gwlab.lab.start(scenario, **FREE)
    try:
        dashboard = lab.dashboard()
        for field in ("ttft", "decode_rate", "capacity"):
            assert ("providers", "a", field) in dashboard.controls
        share = dashboard.controls["workload", "stream_share"]
        assert share.value == 0.5
        dashboard.controls["providers", "a", "ttft"].set_state({"value": 0.35})  # a drag in the browser
        assert lab.scenario.provider("a").ttft == 0.35
        titles = [a.text for a in dashboard.figure.layout.annotations]
        assert titles == list(plots.PANELS + plots.LLM_PANELS)
        lab.run_for(1.5)
        dashboard.redraw()
        assert "TTFT p50 " in dashboard.status.value and "output tokens/s" in dashboard.status.value
        assert "running" in dashboard.status.value
        columns = lab.timeseries().columns()
        assert any(v for v in columns["ttft_p50"] if v) and sum(columns["output_tokens"]) > 0
    finally:
        gwlab.lab.stop()
    seed = gwlab.lab.start(clients=2, **FREE)
    try:
        dashboard = seed.dashboard()
        assert not any(path[-1] in ("ttft", "capacity", "stream_share") for path in dashboard.controls)
        assert [a.text for a in dashboard.figure.layout.annotations] == list(plots.PANELS)
        dashboard.redraw()
        assert "TTFT" not in dashboard.status.value and "running" not in dashboard.status.value
    finally:
        gwlab.lab.stop()


BAD_SECONDS = [math.nan, math.inf, -math.inf, -1, 0, 1e-7, config.MAX_SECONDS + 1, 10**400, "1", None, True, [1]]


@pytest.mark.parametrize("mode", ["live", "virtual"])
def test_run_for_refuses_what_is_not_a_duration_as_simulate_does_and_the_lab_runs_on(mode):
    lab = gwlab.lab.start(clients=2, mode=mode, **FREE)
    for seconds in BAD_SECONDS:
        with pytest.raises(ConfigError) as expected:
            config.run_argument("duration", seconds, "lab.run_for: seconds")
        with pytest.raises(ConfigError) as error:
            lab.run_for(seconds)
        assert str(error.value) == str(expected.value) and str(error.value).startswith("lab.run_for: seconds = ")

        async def run_async(seconds=seconds):
            return await lab.run_for_async(seconds)

        with pytest.raises(ConfigError) as error:
            asyncio.run(run_async())
        assert str(error.value) == str(expected.value)
    summary = lab.run_for(np.float64(0.2))
    assert lab.running and summary["duration"] >= 0.2


BAD_STARTS = [
    ({"port": -1}, "port = -1: expected a whole number >= 0 and <= 65535"),
    ({"port": 65536}, "port = 65536: expected a whole number >= 0 and <= 65535"),
    ({"port": 80.5}, "port = 80.5: expected a whole number >= 0 and <= 65535"),
    ({"port": "8080"}, "port = '8080': expected a whole number >= 0 and <= 65535"),
    ({"port": True}, "port = true: expected a whole number >= 0 and <= 65535"),
    ({"port": None}, "port = null: expected a whole number >= 0 and <= 65535"),
    ({"metrics_port": -1}, "metrics_port = -1: expected a whole number >= 0 and <= 65535"),
    ({"metrics_port": math.inf}, "metrics_port = inf: expected a whole number >= 0 and <= 65535"),
    ({"seed": -1}, "seed = -1: expected a whole number >= 0 and <= 18446744073709551615"),
    ({"seed": 2**64}, "seed = 18446744073709551616: expected a whole number >= 0 and <= 18446744073709551615"),
    ({"seed": 1.5}, "seed = 1.5: expected a whole number >= 0 and <= 18446744073709551615"),
    ({"seed": "1"}, "seed = '1': expected a whole number >= 0 and <= 18446744073709551615"),
    *(({"host": host}, f"host = {shown}: expected {config.RUN_ARGUMENTS['host']['allowed']}")
      for host, shown in BAD_HOSTS),
]


@pytest.mark.parametrize("mode", ["live", "virtual"])
def test_start_refuses_a_bad_seed_host_or_port_before_it_starts_or_stops_anything(mode):
    running = gwlab.lab.start(mode="virtual", seed=5)
    for arguments, message in BAD_STARTS:
        with pytest.raises(ConfigError) as error:
            gwlab.lab.start(**{**FREE, **arguments}, mode=mode)
        assert str(error.value) == f"gwlab.lab.start: {message}"
        assert gwlab.lab.current() is running and running.running and lab_threads() == []


@pytest.mark.parametrize("host, reason", [("nonexistent.invalid", "Name or service not known"),
                                          ("192.0.2.1", "Cannot assign requested address")],
                         ids=["a name that does not resolve", "an address of another machine"])
def test_a_live_start_on_a_host_nothing_can_listen_on_is_refused_before_the_running_lab_stops(host, reason):
    running = gwlab.lab.start(mode="virtual", seed=5)
    with pytest.raises(ConfigError) as error:
        gwlab.lab.start(**FREE, host=host, mode="live")
    assert str(error.value).startswith(f"gwlab.lab.start: host = {host!r}: cannot listen there: {reason}")
    assert gwlab.lab.current() is running and running.running and lab_threads() == []


ALL_400_PATCHES = [
    # patches of the seed scenario after which each request reserves more tokens than a limit can
    # ever admit (2 prompt tokens and a cap of max_tokens, else default_max_tokens = 4096)
    {"limiter": {"tpm": 100}},
    {"limiter": {"tpm": 4097}},  # one token short
    {"workload": {"max_tokens": 100}, "limiter": {"tpm": 101}},
    {"limiter": {"tpm": 200, "default_max_tokens": 199}},
    {"providers": {"p1": {"tpm": 10}, "p2": {"tpm": 10}, "p3": {"tpm": 4097}}},
    {"providers": {"p1": {"tpm": 10}, "p2": {"tpm": 10}, "p3": {"weight": 0.0}}},  # p3 unlimited, but never called
]
RUNNABLE_PATCHES = [
    # applied one after the other
    {"limiter": {"tpm": 4098}},
    {"workload": {"max_tokens": 100}, "limiter": {"tpm": 102}},
    {"limiter": {"tpm": 200, "default_max_tokens": 198}},
    {"providers": {"p1": {"tpm": 10}, "p2": {"tpm": 10}}},  # p3 takes them all
]


@pytest.mark.parametrize("mode", ["live", "virtual"])
def test_configure_refuses_a_change_that_makes_every_request_a_400_in_either_mode(mode):
    lab = gwlab.lab.start(clients=2, mode=mode, **FREE)
    for patch in ALL_400_PATCHES:
        with pytest.raises(ConfigError) as expected:
            workload.check_reservation(config.merge(lab.scenario, patch), "lab.configure")
        with pytest.raises(ConfigError) as error:
            lab.configure(patch)
        assert str(error.value) == str(expected.value)
        with pytest.raises(ConfigError) as error:
            asyncio.run(lab.configure_async(patch, "dashboard"))
        assert str(error.value) == str(expected.value).replace("lab.configure: ", "dashboard: ", 1)
        assert lab.scenario == lab.initial and lab.running
    for patch in RUNNABLE_PATCHES:  # each on top of the ones before
        before = lab.scenario
        assert lab.configure(patch) == config.merge(before, patch) == lab.scenario


ALL_400_STARTS = [
    # scenarios whose requests all reserve more tokens than a limit admits, at the start or after an event
    {"limiter": {"tpm": 100}},
    {"workload": {"max_tokens": 100}, "limiter": {"tpm": 101}},
    {"providers": {"p1": {"tpm": 10}, "p2": {"tpm": 4097}}},
    {"events": [{"at": 5, "limiter": {"tpm": 100}}]},
    {"limiter": {"tpm": 200}, "workload": {"max_tokens": 100},
     "events": [{"at": 1, "workload": {"max_tokens": 0}}, {"at": 2, "limiter": {"tpm": 4098}}]},
]


@pytest.mark.parametrize("mode", ["live", "virtual"])
def test_start_refuses_a_scenario_whose_requests_would_all_be_400s_in_either_mode(mode):
    source = {"live": "live lab", "virtual": "virtual lab"}[mode]
    for data in ALL_400_STARTS:
        scenario = config.merge(config.from_dict(data), {"workload": {"clients": 2}})
        with pytest.raises(ConfigError) as expected:
            check_reservations(scenario, source)
        with pytest.raises(ConfigError) as error:
            gwlab.lab.start(data, clients=2, mode=mode, **FREE)
        assert str(error.value) == str(expected.value)
        assert gwlab.lab.current() is None and lab_threads() == []
    assert gwlab.lab.start({"limiter": {"tpm": 4098}}, clients=2, mode=mode, **FREE).running  # one token more: it runs


@pytest.mark.parametrize("mode", ["live", "virtual"])
def test_a_start_refused_for_its_scenario_leaves_the_running_lab_running(mode):
    # A scenario that parses but cannot run (every request a 400, or, in virtual time, a closed
    # loop that would stand still) is refused before the running lab is touched.
    cannot_run = [*ALL_400_STARTS]
    if mode == "virtual":
        cannot_run.append({"providers": {name: {"latency": 0.0} for name in ("p1", "p2", "p3")},
                           "workload": {"think_time": 0.0}})
    lab = gwlab.lab.start(clients=2, mode=mode, **FREE)
    threads = lab_threads()
    for data in cannot_run:
        with pytest.raises(ConfigError):
            gwlab.lab.start(data, clients=2, mode=mode, **FREE)
        assert gwlab.lab.current() is lab and lab.running, data
        assert lab_threads() == threads
    if mode == "live":
        with socket.create_connection((lab.host, lab.port), timeout=5):
            pass  # still listening
    assert gwlab.lab.start(clients=2, mode=mode, **FREE) is lab  # the same arguments: the same lab


def _other(spec, default):
    """A value of the field whose spec is ``spec`` other than its ``default``."""
    if spec["kind"] is bool:
        return not default
    if spec["kind"] is list:
        return list(default[:1])
    if "lo" in spec:
        near = default + 1 if spec["kind"] is int else default * 2 or 1.0
        return near if near <= spec["hi"] else spec["lo"]
    if callable(spec["allowed"]):  # a choice among options
        return next(o for o in re.findall(r"'([^']*)'", spec["allowed"](None)) if o != default)
    return f"{default}x"


def _added_fields() -> list[dict]:
    """A patch per field added after the first release (``to_dict()`` leaves each out at its
    default) that a running gateway may change, setting it to a value other than its default."""
    seed = Scenario()
    parts = [(name, getattr(seed, name), lambda k, v, n=name: {n: {k: v}})
             for name in ("gateway", "limiter", "breaker", "workload", "retry")]
    parts.append(("providers.p1", seed.provider("p1"), lambda k, v: {"providers": {"p1": {k: v}}}))
    return [place(f.name, _other(f.metadata, f.default))
            for where, part, place in parts for f in dataclasses.fields(part)
            if f.metadata.get("added") and f"{where}.{f.name}" not in config.RESTART_ONLY
            and f.name not in config.FIXED_FIELDS]


@pytest.mark.parametrize("mode", ["live", "virtual"])
def test_reset_restores_every_field_even_those_to_dict_leaves_out_at_their_defaults(mode):
    lab = gwlab.lab.start(clients=2, mode=mode, **FREE)
    changed = []
    for patch in _added_fields():
        try:
            lab.configure(patch)
        except ConfigError:  # the value breaks a rule across fields: the others cover the class
            continue
        changed.append(patch)
    assert len(changed) >= 25 and lab.scenario != lab.initial
    assert lab.reset() == lab.initial == lab.scenario


NUMPY_PATCHES = [
    ({"limiter": {"rate": np.float64(500)}}, {"limiter": {"rate": 500.0}}),
    ({"workload": {"clients": np.int64(3), "think_time": np.float32(0.5)}},
     {"workload": {"clients": 3, "think_time": 0.5}}),
    ({"providers": {"p1": {"weight": np.int8(5), "error_rate": np.float64(0.25)}}},
     {"providers": {"p1": {"weight": 5.0, "error_rate": 0.25}}}),
]


@pytest.mark.parametrize("mode", ["live", "virtual"])
def test_configure_takes_numpy_numbers_as_the_plain_ones(mode):
    lab = gwlab.lab.start(clients=2, mode=mode, **FREE)
    for numpy, plain in NUMPY_PATCHES:
        lab.reset()
        changed = lab.configure(numpy)
        lab.reset()
        assert changed == lab.configure(plain)
        assert changed.to_dict() == lab.scenario.to_dict() and repr(changed) == repr(lab.scenario)


def test_start_takes_numpy_numbers_as_the_plain_ones():
    lab = gwlab.lab.start(clients=2, seed=np.int64(3), port=np.int64(0), metrics_port=np.uint16(0))
    assert type(lab.seed) is int and lab.seed == 3
    assert gwlab.lab.start(clients=2, seed=3, **FREE) is lab


def test_stopping_the_lab_while_run_for_runs_says_so(lab):
    threading.Timer(0.3, lab.stop).start()
    with pytest.raises(RuntimeError, match=r"^the lab was stopped while this call ran, so it has no result; "
                                           r"gwlab.lab.start\(\) starts a new one$"):
        lab.run_for(30)
    assert not lab.running


def test_a_loop_closed_under_a_waiting_call_raises_runtime_error_and_a_cancelled_caller_is_cancelled():
    for wait in ("call", "call_async"):
        thread = LoopThread("gwlab-lab-test")
        threading.Timer(0.2, thread.close).start()
        with pytest.raises(RuntimeError, match="^the lab was stopped while this call ran"):
            if wait == "call":
                thread.call(asyncio.sleep(30))
            else:
                asyncio.run(thread.call_async(asyncio.sleep(30)))

    async def cancelled(thread):
        task = asyncio.create_task(thread.call_async(asyncio.sleep(30)))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return task.cancelled()

    thread = LoopThread("gwlab-lab-test")
    try:
        assert asyncio.run(cancelled(thread))
    finally:
        thread.close()

