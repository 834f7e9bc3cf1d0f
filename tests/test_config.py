"""Scenario configuration: defaults, the seed file, round trips, merges and every error message."""

from __future__ import annotations

import dataclasses
import datetime
import fractions
import json
import math
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlab import config
from gwlab.config import ConfigError, Event, Scenario
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

SEED_TOML = Path(__file__).resolve().parent.parent / "scenarios" / "seed.toml"


def test_seed_file_equals_the_defaults():
    assert config.load(SEED_TOML) == Scenario()


def test_defaults_are_the_named_constants():
    s = Scenario()
    assert (s.gateway.balancer, s.gateway.timeout) == (config.BALANCER, config.TIMEOUT)
    assert (s.limiter.rate, s.limiter.burst) == (config.RATE, config.BURST) == (1000.0, 1000.0)
    assert (s.breaker.failure_threshold, s.breaker.base_delay, s.breaker.max_cooldown, s.breaker.half_open_max_calls) == (
        config.FAILURE_THRESHOLD, config.BASE_DELAY, config.MAX_COOLDOWN, config.HALF_OPEN_MAX_CALLS,
    )
    assert s.breaker.enabled is True
    assert [(p.name, p.weight, p.latency, p.error_rate) for p in s.providers] == list(config.SEED_PROVIDERS) == [
        ("p1", 70.0, 0.1, 0.05), ("p2", 20.0, 0.5, 0.10), ("p3", 10.0, 2.0, 0.20),
    ]
    assert {p.distribution for p in s.providers} == {config.DISTRIBUTION}
    assert {p.outage for p in s.providers} == {"none"}
    assert (s.workload.mode, s.workload.clients, s.workload.think_time, s.workload.rate) == (
        "closed", config.CLIENTS, config.THINK_TIME, config.OPEN_RATE,
    )
    assert s.events == ()


def test_empty_dict_is_the_default_scenario():
    assert config.from_dict({}) == Scenario()


def test_provider_lookup():
    s = Scenario()
    assert s.provider("p2").latency == 0.5
    with pytest.raises(KeyError):
        s.provider("p9")


def test_absent_fields_take_defaults():
    s = config.from_dict({"limiter": {"rate": 5}, "providers": {"x": {"weight": 2}}})
    assert s.limiter == config.LimiterConfig(rate=5.0, burst=config.BURST)
    assert s.providers == (config.ProviderConfig(name="x", weight=2.0),)
    assert isinstance(s.limiter.rate, float)


def test_providers_keep_file_order():
    s = config.from_dict({"providers": {"z": {}, "a": {}, "m": {}}})
    assert [p.name for p in s.providers] == ["z", "a", "m"]


def test_whole_float_is_accepted_as_integer():
    assert config.from_dict({"workload": {"clients": 20.0}}).workload.clients == 20


FULL = {
    "gateway": {"balancer": "power_of_two", "timeout": 2.5},
    "limiter": {"rate": 50.0, "burst": 5.0},
    "breaker": {"enabled": False, "failure_threshold": 5, "base_delay": 0.5, "max_cooldown": 8.0,
                "half_open_max_calls": 2},
    "providers": {
        "fast": {"weight": 3.0, "latency": 0.05, "distribution": "exponential", "p99": 0.0,
                 "error_rate": 0.01, "outage": "none"},
        "slow": {"weight": 1.0, "latency": 0.4, "distribution": "lognormal", "p99": 3.0,
                 "error_rate": 0.2, "outage": "hang"},
    },
    "workload": {"mode": "open", "clients": 7, "think_time": 0.25, "rate": 300.0},
    "events": [
        {"at": 2.0, "providers": {"slow": {"outage": "none"}}},
        {"at": 5.0, "limiter": {"rate": 10.0}, "breaker": {"enabled": True}},
    ],
}


def test_to_dict_round_trips():
    s = config.from_dict(FULL)
    assert s.to_dict() == FULL
    assert config.from_dict(s.to_dict()) == s
    assert config.from_dict(Scenario().to_dict()) == Scenario()
    assert "events" not in Scenario().to_dict()


def test_a_complete_to_dict_holds_every_field_and_as_a_patch_undoes_any_change():
    seed = Scenario()
    complete = seed.to_dict(complete=True)
    for section in ("gateway", "limiter", "breaker", "workload", "retry"):
        assert sorted(complete[section]) == sorted(f.name for f in dataclasses.fields(getattr(seed, section)))
    assert sorted(complete["providers"]["p1"]) == sorted(f.name for f in dataclasses.fields(config.ProviderConfig)
                                                         if f.name != "name")
    assert config.from_dict(complete) == seed
    changed = config.merge(seed, {"workload": {"max_tokens": 100}, "retry": {"attempts": 3},
                                  "providers": {"p1": {"tpm": 600}}})
    assert config.merge(changed, complete) == seed != config.merge(changed, seed.to_dict())


def test_events_are_sorted_by_time_keeping_order_of_equal_times():
    s = config.from_dict({"events": [
        {"at": 5, "limiter": {"rate": 5}},
        {"at": 1, "limiter": {"rate": 1}},
        {"at": 3, "limiter": {"rate": 3}},
        {"at": 1, "limiter": {"rate": 2}},
    ]})
    assert s.events == (
        Event(1.0, {"limiter": {"rate": 1}}),
        Event(1.0, {"limiter": {"rate": 2}}),
        Event(3.0, {"limiter": {"rate": 3}}),
        Event(5.0, {"limiter": {"rate": 5}}),
    )
    assert all(isinstance(e.at, float) for e in s.events)


def test_merge_changes_only_what_it_names():
    s = Scenario()
    m = config.merge(s, {"providers": {"p2": {"outage": "error"}}, "limiter": {"burst": 10}})
    assert m.provider("p2") == config.ProviderConfig(name="p2", weight=20.0, latency=0.5, error_rate=0.10, outage="error")
    assert m.provider("p1") == s.provider("p1")
    assert m.limiter == config.LimiterConfig(rate=1000.0, burst=10.0)
    assert s.provider("p2").outage == "none"  # the original is untouched


def test_merge_keeps_events():
    s = config.from_dict({"events": [{"at": 1, "limiter": {"rate": 5}}]})
    assert config.merge(s, {"limiter": {"burst": 9}}).events == s.events


def test_merge_may_not_add_providers():
    with pytest.raises(ConfigError) as error:
        config.merge(Scenario(), {"providers": {"p4": {"weight": 1}}})
    assert str(error.value) == "patch: unknown key 'providers.p4'; allowed: p1, p2, p3"


def test_merge_validates_the_whole():
    with pytest.raises(ConfigError) as error:
        config.merge(Scenario(), {"breaker": {"base_delay": 60}}, source="PATCH /admin/config")
    assert str(error.value) == (
        "PATCH /admin/config: breaker.max_cooldown = 30.0: expected a number >= breaker.base_delay (60)"
    )


def test_events_are_checked_in_the_order_they_apply():
    with pytest.raises(ConfigError) as error:
        config.from_dict({"events": [
            {"at": 2, "breaker": {"max_cooldown": 5}},
            {"at": 1, "breaker": {"base_delay": 10, "max_cooldown": 40}},
        ]})
    assert str(error.value) == (
        "scenario: event at 2 s: breaker.max_cooldown = 5.0: expected a number >= breaker.base_delay (10)"
    )


ERRORS = [
    # (data, message) -- each names the source, the dotted field, the value and what is allowed
    ({"limiter": {"rate": -1}}, "scenario: limiter.rate = -1: expected a number >= 0.001 and <= 1e+06"),
    ({"limiter": {"rate": 0.0}}, "scenario: limiter.rate = 0.0: expected a number >= 0.001 and <= 1e+06"),
    ({"limiter": {"burst": 0.5}}, "scenario: limiter.burst = 0.5: expected a number >= 1 and <= 1e+06"),
    ({"limiter": {"backend": "memcached"}}, "scenario: limiter.backend = 'memcached': expected one of 'local', 'redis'"),
    ({"limiter": {"redis_url": "http://127.0.0.1:6379"}},
     "scenario: limiter.redis_url = 'http://127.0.0.1:6379': expected a redis:// or rediss:// URL (or unix:// for a "
     "socket)"),
    ({"limiter": {"redis_url": "127.0.0.1:6379"}},
     "scenario: limiter.redis_url = '127.0.0.1:6379': expected a redis:// or rediss:// URL (or unix:// for a socket)"),
    ({"limiter": {"redis_url": "http://:s3cret@127.0.0.1:6379"}},
     "scenario: limiter.redis_url = 'http://:***@127.0.0.1:6379': expected a redis:// or rediss:// URL (or unix:// "
     "for a socket)"),
    ({"limiter": {"redis_url": "user:s3cret@127.0.0.1:6379"}},
     "scenario: limiter.redis_url = '***@127.0.0.1:6379': expected a redis:// or rediss:// URL (or unix:// for a "
     "socket)"),
    ({"limiter": {"redis_prefix": ""}},
     "scenario: limiter.redis_prefix = '': expected 1 to 100 printable ASCII characters, no spaces"),
    ({"limiter": {"redis_prefix": "my gateway"}},
     "scenario: limiter.redis_prefix = 'my gateway': expected 1 to 100 printable ASCII characters, no spaces"),
    ({"limiter": {"redis_prefix": "g" * 101}},
     f"scenario: limiter.redis_prefix = {'g' * 101!r}: expected 1 to 100 printable ASCII characters, no spaces"),
    ({"limiter": {"redis_timeout": 0}}, "scenario: limiter.redis_timeout = 0: expected a number >= 1e-06 and <= 10"),
    ({"limiter": {"redis_timeout": 10.5}},
     "scenario: limiter.redis_timeout = 10.5: expected a number >= 1e-06 and <= 10"),
    ({"limiter": {"redis_failure": "retry"}},
     "scenario: limiter.redis_failure = 'retry': expected one of 'open', 'closed'"),
    ({"events": [{"at": 1, "limiter": {"backend": "redis"}}]},
     "scenario: event at 1 s: limiter.backend = 'redis': expected 'local', its value at start: it is fixed while "
     "the gateway runs (restart it with the new value)"),
    ({"events": [{"at": 1, "limiter": {"redis_url": "redis://10.0.0.1"}}]},
     "scenario: event at 1 s: limiter.redis_url = 'redis://10.0.0.1': expected 'redis://127.0.0.1:6379/0', its "
     "value at start: it is fixed while the gateway runs (restart it with the new value)"),
    ({"limiter": {"redis_url": "redis://:s3cret@10.0.0.1"},
      "events": [{"at": 1, "limiter": {"redis_url": "redis://:other@10.0.0.2"}}]},
     "scenario: event at 1 s: limiter.redis_url = 'redis://:***@10.0.0.2': expected 'redis://:***@10.0.0.1', its "
     "value at start: it is fixed while the gateway runs (restart it with the new value)"),
    ({"workload": {"clients": 0}}, "scenario: workload.clients = 0: expected a whole number >= 1 and <= 100000"),
    ({"workload": {"clients": 2.5}}, "scenario: workload.clients = 2.5: expected a whole number >= 1 and <= 100000"),
    ({"workload": {"mode": "burst"}}, "scenario: workload.mode = 'burst': expected one of 'closed', 'open'"),
    ({"workload": {"think_time": -0.5}}, "scenario: workload.think_time = -0.5: expected a number >= 0 and <= 31536000"),
    ({"providers": {"a": {"weight": 0}, "b": {"weight": 0}}},
     "scenario: providers.*.weight = [0.0, 0.0]: expected at least one weight > 0"),
    ({"providers": {"p1": {"error_rate": 1.5}}},
     "scenario: providers.p1.error_rate = 1.5: expected a number >= 0 and <= 1"),
    ({"providers": {"p1": {"outage": "down"}}},
     "scenario: providers.p1.outage = 'down': expected one of 'none', 'error', 'hang'"),
    ({"providers": {"p1": {"distribution": "gamma"}}},
     "scenario: providers.p1.distribution = 'gamma': expected one of 'fixed', 'exponential', 'lognormal'"),
    ({"providers": {"p1": {"distribution": "lognormal"}}},
     "scenario: providers.p1.p99 = 0.0: expected a log-normal p99 greater than its median latency (0.1),"
     " which must be > 0, and at most 1000 times it"),
    ({"providers": {"p1": {"distribution": "lognormal", "latency": 0.5, "p99": 0.5}}},
     "scenario: providers.p1.p99 = 0.5: expected a log-normal p99 greater than its median latency (0.5),"
     " which must be > 0, and at most 1000 times it"),
    *[({"providers": {name: {}}}, f"scenario: providers.{name!r} = {name!r}: expected a provider name of ASCII letters,"
       " digits and _, not starting with a digit") for name in ("p-1", "", "1p", "пр", "p\u00e9", "p 1")],
    ({"providers": {}}, "scenario: providers = a table: expected at least one provider"),
    ({"breaker": {"max_cooldown": 0.5}},
     "scenario: breaker.max_cooldown = 0.5: expected a number >= breaker.base_delay (1)"),
    ({"breaker": {"enabled": 1}}, "scenario: breaker.enabled = 1: expected true or false"),
    ({"breaker": {"failure_threshold": True}}, "scenario: breaker.failure_threshold = true: expected a whole number >= 1 and <= 1000000"),
    ({"breaker": {"half_open_max_calls": 0}}, "scenario: breaker.half_open_max_calls = 0: expected a whole number >= 1 and <= 1000000"),
    ({"gateway": {"balancer": "fastest"}},
     "scenario: gateway.balancer = 'fastest': expected one of 'weighted_random', 'round_robin', 'power_of_two'"),
    ({"gateway": {"timeout": 0}}, "scenario: gateway.timeout = 0: expected a number >= 1e-06 and <= 31536000"),
    # wrong types, bool where a number belongs, NaN and infinity
    ({"limiter": {"rate": "fast"}}, "scenario: limiter.rate = 'fast': expected a number >= 0.001 and <= 1e+06"),
    ({"limiter": {"rate": True}}, "scenario: limiter.rate = true: expected a number >= 0.001 and <= 1e+06"),
    ({"limiter": {"rate": math.nan}}, "scenario: limiter.rate = nan: expected a number >= 0.001 and <= 1e+06"),
    ({"providers": {"p1": {"weight": math.inf}}}, "scenario: providers.p1.weight = inf: expected a number >= 0 and <= 1e+06"),
    ({"providers": {"p1": {"latency": math.nan}}}, "scenario: providers.p1.latency = nan: expected a number >= 0 and <= 31536000"),
    ({"gateway": {"balancer": 3}},
     "scenario: gateway.balancer = 3: expected one of 'weighted_random', 'round_robin', 'power_of_two'"),
    ({"limiter": 5}, "scenario: limiter = 5: expected a table"),
    ({"providers": {"p1": 1}}, "scenario: providers.p1 = 1: expected a table"),
    # unknown keys, with a suggestion, in every section
    ({"limitter": {}},
     "scenario: unknown key 'limitter' (did you mean 'limiter'?);"
     " allowed: gateway, limiter, breaker, workload, retry, providers, events"),
    ({"gateway": {"balancr": "x"}},
     "scenario: unknown key 'gateway.balancr' (did you mean 'balancer'?); allowed: balancer, timeout, stream_idle_timeout, fallback"),
    ({"limiter": {"rat": 5}}, "scenario: unknown key 'limiter.rat' (did you mean 'rate'?); allowed: rate, burst, tpm, default_max_tokens, "
     "backend, redis_url, redis_prefix, redis_timeout, redis_failure"),
    ({"breaker": {"treshold": 2}},
     "scenario: unknown key 'breaker.treshold' (did you mean 'failure_threshold'?);"
     " allowed: enabled, failure_threshold, base_delay, max_cooldown, half_open_max_calls, count_rate_limited"),
    ({"workload": {"think": 1}},
     "scenario: unknown key 'workload.think' (did you mean 'think_time'?); allowed: mode, clients, think_time, rate, max_in_flight, stream_share, max_tokens, prompt_tokens, "
     "retry_policy, retries, retry_delay, retry_max_delay, timeout, adaptive_k, adaptive_window"),
    ({"providers": {"p1": {"weigth": 1}}},
     "scenario: unknown key 'providers.p1.weigth' (did you mean 'weight'?);"
     " allowed: weight, latency, distribution, p99, error_rate, outage, ttft, ttft_distribution, ttft_p99,"
     " decode_rate, output_tokens, output_distribution, output_p99, stream_error_rate,"
     " capacity, queue, rpm, tpm, kind, base_url, api_key_env, model, connections, connect_timeout"),
    ({"events": [{"at": 1, "limiter": {"rat": 5}}]},
     "scenario: event at 1 s: unknown key 'limiter.rat' (did you mean 'rate'?); allowed: rate, burst, tpm, default_max_tokens, "
     "backend, redis_url, redis_prefix, redis_timeout, redis_failure"),
    ({"events": [{"at": 1, "provders": {}}]},
     "scenario: event at 1 s: unknown key 'provders' (did you mean 'providers'?);"
     " allowed: gateway, limiter, breaker, workload, retry, providers"),
    ({"events": [{"at": 1, "providers": {"p1": {"outge": "error"}}}]},
     "scenario: event at 1 s: unknown key 'providers.p1.outge' (did you mean 'outage'?);"
     " allowed: weight, latency, distribution, p99, error_rate, outage, ttft, ttft_distribution, ttft_p99,"
     " decode_rate, output_tokens, output_distribution, output_p99, stream_error_rate,"
     " capacity, queue, rpm, tpm, kind, base_url, api_key_env, model, connections, connect_timeout"),
    # events
    ({"events": [{"at": -1, "limiter": {"rate": 5}}]}, "scenario: events[0].at = -1: expected a number >= 0 and <= 31536000"),
    ({"events": [{"limiter": {"rate": 5}}]}, "scenario: events[0].at = (missing): expected a number >= 0 and <= 31536000"),
    ({"events": [{"at": "soon", "limiter": {"rate": 5}}]},
     "scenario: events[0].at = 'soon': expected a number >= 0 and <= 31536000"),
    ({"events": [{"at": math.inf, "limiter": {"rate": 5}}]},
     "scenario: events[0].at = inf: expected a number >= 0 and <= 31536000"),
    ({"events": [{"at": 1, "providers": {"p9": {"outage": "error"}}}]},
     "scenario: event at 1 s: unknown key 'providers.p9'; allowed: p1, p2, p3"),
    ({"events": [{"at": 1.5, "limiter": {"rate": -2}}]},
     "scenario: event at 1.5 s: limiter.rate = -2: expected a number >= 0.001 and <= 1e+06"),
    ({"events": [{"at": 1, "events": []}]},
     "scenario: unknown key 'events[0].events'; allowed: gateway, limiter, breaker, workload, retry, providers"),
    ({"events": {"at": 1}}, "scenario: events = a table: expected an array of tables ([[events]])"),
]


@pytest.mark.parametrize(("data", "message"), ERRORS, ids=[m.split(": ", 1)[1][:50] for _, m in ERRORS])
def test_error_messages(data, message):
    with pytest.raises(ConfigError) as error:
        config.from_dict(data)
    assert str(error.value) == message


def test_error_names_the_given_source():
    with pytest.raises(ConfigError, match=r"^notebook cell: limiter\.rate = -1: expected a number >= 0\.001 and <= 1e\+06$"):
        config.from_dict({"limiter": {"rate": -1}}, source="notebook cell")


def test_empty_event_is_an_error():
    with pytest.raises(ConfigError) as error:
        config.from_dict({"events": [{"at": 1}]})
    assert str(error.value) == "scenario: events[0] = a table: expected at least one change besides 'at'"


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


TOML_ERRORS = [
    ("[limiter]\nrate = -5\n", "{path}: limiter.rate = -5: expected a number >= 0.001 and <= 1e+06"),
    ("[limiter]\nrate = nan\n", "{path}: limiter.rate = nan: expected a number >= 0.001 and <= 1e+06"),
    ("[limiter]\nrate = true\n", "{path}: limiter.rate = true: expected a number >= 0.001 and <= 1e+06"),
    ("[workload]\nclients = 0\n", "{path}: workload.clients = 0: expected a whole number >= 1 and <= 100000"),
    ('[providers.p1]\nlatency = "fast"\n', "{path}: providers.p1.latency = 'fast': expected a number >= 0 and <= 31536000"),
    ("[[events]]\nat = -1\nlimiter.rate = 5\n", "{path}: events[0].at = -1: expected a number >= 0 and <= 31536000"),
    ('[[events]]\nat = 3\nproviders.p7.outage = "error"\n',
     "{path}: event at 3 s: unknown key 'providers.p7'; allowed: p1, p2, p3"),
    ("\ufeff[workload]\nclients = 5\n", "{path}: starts with a byte order mark (bytes 0xef 0xbb 0xbf): expected "
     "UTF-8 text without one (save it without the mark)"),
]


@pytest.mark.parametrize(("text", "message"), TOML_ERRORS)
def test_load_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert str(error.value) == message.format(path=path)


NOT_UTF8 = [
    (b"[limiter]\nrate = 5 # \xff\n", 21, 0xFF),
    (b"\x80", 0, 0x80),
    ("[workload]\nmode = 'closed'\n# caf\u00e9\n".encode("latin-1"), 32, 0xE9),
    ("# \u00e9\n".encode("utf-16"), 0, 0xFF),
    (b"# \xe2\x82\n", 2, 0xE2),  # a sequence cut short
]


@pytest.mark.parametrize(("data", "offset", "byte"), NOT_UTF8)
def test_load_names_the_file_and_the_first_byte_that_is_not_utf8(tmp_path, data, offset, byte):
    path = tmp_path / "latin.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert str(error.value) == f"{path}: byte {byte:#04x} at offset {offset}: expected UTF-8 text (TOML files are UTF-8)"


def test_load_not_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[limiter\nrate = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert str(error.value).startswith(f"{path}: not valid TOML: ")
    assert "\n" not in str(error.value)


def test_load_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert str(error.value) == f"{path}: cannot read: No such file or directory"


def test_load_directory(tmp_path):
    with pytest.raises(ConfigError) as error:
        config.load(tmp_path)
    assert str(error.value) == f"{tmp_path}: cannot read: Is a directory"


@pytest.mark.parametrize("size, refused", [(64, False), (65, True)])
def test_load_refuses_a_file_beyond_its_bound_having_read_no_more(size, refused, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_SCENARIO_BYTES", 64)
    path = tmp_path / "long.toml"
    path.write_text("[workload]\nclients = 5\n" + "#" * (size - 24) + "\n", encoding="utf-8")
    assert path.stat().st_size == size
    if refused:
        with pytest.raises(ConfigError) as error:
            config.load(path)
        assert str(error.value) == (f"{path}: more than 64 bytes: expected a scenario file of at most 64 bytes "
                                    "(gwlab.config.MAX_SCENARIO_BYTES)")
    else:
        assert config.load(path).workload.clients == 5


@pytest.mark.skipif(not Path("/dev/zero").is_char_device(), reason="reads /dev/zero, an endless file")
def test_load_of_an_endless_file_is_refused_at_the_bound():
    with pytest.raises(ConfigError, match=r"^/dev/zero: more than 16777216 bytes: expected a scenario file"):
        config.load("/dev/zero")
    assert config.MAX_SCENARIO_BYTES == 16 * 1024 * 1024


def test_load_events_file(tmp_path):
    path = tmp_path / "outage.toml"
    path.write_text(
        '[[events]]\nat = 20\nproviders.p1.outage = "none"\n\n'
        '[[events]]\nat = 10\nproviders.p1.outage = "error"\n',
        encoding="utf-8",
    )
    s = config.load(path)
    assert s.events == (
        Event(10.0, {"providers": {"p1": {"outage": "error"}}}),
        Event(20.0, {"providers": {"p1": {"outage": "none"}}}),
    )
    assert s.providers == Scenario().providers


def _fields(pick: Callable[[Mapping], bool]):
    """(dotted name, field spec, a function giving the scenario data that puts a value there)
    for every field of every part of a scenario whose spec ``pick`` picks, read from the
    dataclass metadata: a new field is walked as soon as it has one."""
    defaults = Scenario()
    parts = [(f.name, type(getattr(defaults, f.name)), lambda k, v, s=f.name: {s: {k: v}})
             for f in dataclasses.fields(Scenario) if dataclasses.is_dataclass(getattr(defaults, f.name))]
    parts.append(("providers.p1", config.ProviderConfig,
                  lambda k, v: {"providers": {"p1": {k: v}, "p2": {}}}))
    parts.append(("events[0]", config.Event, lambda k, v: {"events": [{k: v, "limiter": {"rate": 5}}]}))
    for where, cls, place in parts:
        for f in dataclasses.fields(cls):
            if f.metadata and pick(f.metadata):
                yield f"{where}.{f.name}", f.metadata, lambda v, k=f.name, p=place: p(k, v)


NUMERIC_FIELDS = list(_fields(lambda spec: "lo" in spec))
"""Every field that has a range."""
BOOL_FIELDS = list(_fields(lambda spec: spec["kind"] is bool))
ARRAY_FIELDS = list(_fields(lambda spec: spec["kind"] is list))
"""Every field that holds an array (of numbers: statuses)."""

ROOM = {
    # what a boundary value needs from another field to pass the rules across fields
    "breaker.base_delay": {"breaker": {"max_cooldown": config.MAX_SECONDS}},
    "breaker.max_cooldown": {"breaker": {"base_delay": config.MIN_SECONDS}},
    "retry.base_delay": {"retry": {"max_delay": config.MAX_SECONDS}},
    "retry.max_delay": {"retry": {"base_delay": config.MIN_SECONDS}},
    "workload.retry_delay": {"workload": {"retry_max_delay": config.MAX_SECONDS}},
    "workload.retry_max_delay": {"workload": {"retry_delay": config.MIN_SECONDS}},
}


def _with_room(where: str, data: dict) -> dict:
    for section, fields in ROOM.get(where, {}).items():
        data[section] = {**fields, **data[section]}
    return data


def _read(scenario: Scenario, where: str):
    part, name = where.rsplit(".", 1)
    if part == "events[0]":
        return scenario.events[0].at
    return getattr(scenario.provider("p1") if part == "providers.p1" else getattr(scenario, part), name)


def test_every_field_but_names_and_patches_has_a_range_or_a_set_of_choices():
    for cls in (config.GatewayConfig, config.LimiterConfig, config.BreakerConfig, config.ProviderConfig,
                config.WorkloadConfig, config.Event):
        for f in dataclasses.fields(cls):
            if f.name in ("name", "patch"):
                continue
            assert f.metadata["kind"] in (str, bool) or math.isfinite(f.metadata["hi"]), (cls, f.name)
    walked = {where for where, _, _ in NUMERIC_FIELDS}
    assert {"limiter.rate", "workload.clients", "providers.p1.p99", "events[0].at"} <= walked


def _inside(spec) -> list:
    return [spec["lo"], spec["hi"]]


def _outside(spec) -> list:
    lo, hi = spec["lo"], spec["hi"]
    near = [lo - 1, hi + 1] if spec["kind"] is int else [math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)]
    return [*near, 10**400, -(10**400), math.inf, -math.inf, math.nan]


@pytest.mark.parametrize(("where", "spec", "place"), NUMERIC_FIELDS, ids=[w for w, _, _ in NUMERIC_FIELDS])
def test_every_field_takes_its_bounds_and_refuses_what_lies_just_outside(where, spec, place):
    for value in _inside(spec):
        scenario = config.from_dict(_with_room(where, place(value)))
        assert _read(scenario, where) == value and type(_read(scenario, where)) is spec["kind"]
        assert config.from_dict(scenario.to_dict()) == scenario
    for value in _outside(spec):
        with pytest.raises(ConfigError) as error:
            config.from_dict(_with_room(where, place(value)))
        message = str(error.value)
        assert message.startswith(f"scenario: {where} = ") and message.endswith(f": expected {spec['allowed']}")
        assert "\n" not in message and len(message) < 200


def _kinds_of(value) -> list:
    """``value`` as numbers of other types that hold it exactly: NumPy's integers (those wide
    enough) and floats, and a Fraction."""
    if isinstance(value, int):
        kinds = [np.int8, np.int16, np.int32, np.int64, np.uint64]
        return [k(value) for k in kinds if np.iinfo(k).min <= value <= np.iinfo(k).max] + [fractions.Fraction(value)]
    return [np.float64(value), fractions.Fraction(value)]


@pytest.mark.parametrize(("where", "spec", "place"), NUMERIC_FIELDS, ids=[w for w, _, _ in NUMERIC_FIELDS])
def test_every_field_takes_numbers_of_any_type_as_the_plain_number_they_hold(where, spec, place):
    for value in _inside(spec):
        plain = config.from_dict(_with_room(where, place(value)))
        for number in _kinds_of(value):
            scenario = config.from_dict(_with_room(where, place(number)))
            assert scenario == plain and type(_read(scenario, where)) is spec["kind"], (type(number), value)
    for value in _outside(spec)[:2]:
        with pytest.raises(ConfigError) as plain:
            config.from_dict(_with_room(where, place(value)))
        for number in _kinds_of(value):
            with pytest.raises(ConfigError) as error:
                config.from_dict(_with_room(where, place(number)))
            assert str(error.value) == str(plain.value), type(number)


@pytest.mark.parametrize("number", [True, False, np.bool_(True), "1", None, [1], 1j, datetime.date(2024, 1, 1)])
def test_a_bool_or_what_is_not_a_real_number_is_refused_where_a_number_belongs(number):
    with pytest.raises(ConfigError, match=r"^scenario: workload.clients = .*: expected a whole number >= 1 and <= "):
        config.from_dict({"workload": {"clients": number}})
    with pytest.raises(ConfigError, match=r"^scenario: limiter.rate = .*: expected a number >= 0.001 and <= "):
        config.from_dict({"limiter": {"rate": number}})


def _outcome_of(where: str, data: dict) -> tuple:
    """The field at ``where`` of the scenario built from ``data``, or the message refusing it."""
    try:
        scenario = config.from_dict(_with_room(where, data))
    except ConfigError as error:
        return "refused", str(error)
    taken = _read(scenario, where)
    return "taken", taken, type(taken), [type(item) for item in taken] if isinstance(taken, tuple) else None


def _numpy_forms(value) -> list:
    """``value`` (a bool, int or float) as NumPy holds it: its scalar and a 0-d array."""
    return [np.bool_(value), np.array(value)] if isinstance(value, bool) else [np.array(value), np.asarray(value)[()]]


SCALARS = [True, False, 0, 1, 2, 1.0, 0.5, -1, 1e300, math.nan]
"""Plain values a field of each kind takes or refuses: each given as NumPy holds it must
fare exactly as the plain one, taken as the same plain value or refused with the same message."""


@pytest.mark.parametrize(("where", "spec", "place"), NUMERIC_FIELDS + BOOL_FIELDS,
                         ids=[w for w, _, _ in NUMERIC_FIELDS + BOOL_FIELDS])
def test_numpy_bools_and_0d_arrays_fare_exactly_as_the_plain_value_they_hold(where, spec, place):
    values = [*SCALARS, *_inside(spec)] if "lo" in spec else SCALARS
    for value in values:
        plain = _outcome_of(where, place(value))
        for numpy in _numpy_forms(value):
            assert _outcome_of(where, place(numpy)) == plain, (type(numpy), value)
    assert _outcome_of(where, place(True if spec["kind"] is bool else spec["lo"]))[0] == "taken"
    for array in (np.array([True]), np.array([[1]]), np.array([])):  # no longer one value: no number, no bool
        assert _outcome_of(where, place(array))[0] == "refused"


@pytest.mark.parametrize(("where", "spec", "place"), ARRAY_FIELDS, ids=[w for w, _, _ in ARRAY_FIELDS])
def test_an_arrays_numpy_items_fare_exactly_as_the_plain_values_they_hold(where, spec, place):
    default = list(_read(Scenario(), where))
    for items in (default, default[:1], [default[0], True], [default[0], 1.5], [default[0], default[0]], [True]):
        plain = _outcome_of(where, place(items))
        for forms in zip(*map(_numpy_forms, items)):
            assert _outcome_of(where, place(list(forms))) == plain, (forms, items)
    assert _outcome_of(where, place(default))[0] == "taken"


def test_an_events_patch_keeps_its_bools_and_numpy_arrays_plain():
    patch = {"breaker": {"enabled": np.bool_(False), "count_rate_limited": np.array(True)},
             "retry": {"retry_on": [np.int64(502), np.array(504)]}}
    event = config.from_dict({"events": [{"at": 1, **patch}]}).events[0]
    assert event.patch == {"breaker": {"enabled": False, "count_rate_limited": True}, "retry": {"retry_on": [502, 504]}}
    assert [type(v) for v in (*event.patch["breaker"].values(), *event.patch["retry"]["retry_on"])] == [bool, bool, int, int]


def test_an_events_patch_keeps_its_numbers_plain():
    data = {"events": [{"at": np.float32(2.5), "workload": {"clients": np.int16(7), "rate": np.float64(9.5)},
                        "providers": {"p1": {"weight": fractions.Fraction(1, 2)}}}]}
    event = config.from_dict(data).events[0]
    assert event.patch == {"workload": {"clients": 7, "rate": 9.5}, "providers": {"p1": {"weight": 0.5}}}
    assert [type(v) for v in (event.at, *event.patch["workload"].values(), event.patch["providers"]["p1"]["weight"])] \
        == [float, int, float, float]
    assert json.loads(json.dumps(config.from_dict(data).to_dict()))["events"][0]["workload"] == {"clients": 7, "rate": 9.5}


NOT_STRING_KEYS = [
    ({1: {}}, "scenario: scenario key = 1"),
    ({None: 1}, "scenario: scenario key = null"),
    ({"workload": {1: 5}}, "scenario: workload key = 1"),
    ({"limiter": {("rate",): 5}}, "scenario: limiter key = ('rate',)"),
    ({"providers": {1: {}}}, "scenario: providers key = 1"),
    ({"providers": {"p1": {b"weight": 1}}}, "scenario: providers.p1 key = b'weight'"),
    ({"events": [{"at": 1, 2.5: {}}]}, "scenario: events[0] key = 2.5"),
    ({"events": [{"at": 1, "workload": {True: 1}}]}, "scenario: event at 1 s: workload key = true"),
]


@pytest.mark.parametrize(("data", "message"), NOT_STRING_KEYS)
def test_a_key_that_is_not_a_string_is_refused_naming_its_table(data, message):
    with pytest.raises(ConfigError) as error:
        config.from_dict(data)
    assert str(error.value) == f"{message}: expected a string, as every key of a table"
    with pytest.raises(ConfigError) as error:
        config.merge(Scenario(), data, "lab.configure")
    if "events" not in data:
        assert str(error.value) == message.replace("scenario: ", "lab.configure: ", 1) + \
            ": expected a string, as every key of a table"


def _outcome(name: str, value) -> tuple:
    try:
        taken = config.run_argument(name, value, name)
    except ConfigError as error:
        return "refused", str(error)
    return "taken", taken, type(taken)


@given(st.integers(-(2**63), 2**63 - 1), st.floats())
def test_a_numpy_number_is_taken_or_refused_exactly_as_the_plain_number_it_holds(whole, real):
    for name in ("seed", "duration", "port"):
        assert _outcome(name, np.int64(whole)) == _outcome(name, whole)
        assert _outcome(name, np.float64(real)) == _outcome(name, real)


@pytest.mark.parametrize("name", sorted(config.RUN_RANGES))
def test_every_run_argument_takes_numbers_of_any_type_as_the_plain_number_they_hold(name):
    spec = config.RUN_RANGES[name]
    for value in _inside(spec):
        for number in _kinds_of(value):
            taken = config.run_argument(name, number, f"simulate: {name}")
            assert taken == value and type(taken) is spec["kind"], type(number)


@pytest.mark.parametrize("name", sorted(config.RUN_RANGES))
def test_every_run_argument_takes_its_bounds_and_refuses_what_lies_just_outside(name):
    spec = config.RUN_RANGES[name]
    for value in _inside(spec):
        assert config.run_argument(name, value, f"simulate: {name}") == value
    for value in _outside(spec):
        with pytest.raises(ConfigError) as error:
            config.run_argument(name, value, f"--{name}")
        message = str(error.value)
        assert message.startswith(f"--{name} = ") and message.endswith(f": expected {spec['allowed']}")


GOOD_HOSTS = ["127.0.0.1", "0.0.0.0", "::", "::1", "fe80::1%eth0", "localhost", "localhost.",
              "gw-1.example_net.internal", "a" * 63, ".".join(["a" * 63] * 4)[:config.MAX_HOST_NAME],
              ".".join(["a" * 63] * 4)[:config.MAX_HOST_NAME] + "."]
BAD_HOSTS = [
    # (value, as the message shows it): what is not a string, then strings that are no address
    (None, "null"), (8080, "8080"), (127.0, "127.0"), (True, "true"), (b"127.0.0.1", "b'127.0.0.1'"),
    (["127.0.0.1"], "an array"), ("", "''"), ("127.0.0.1:8080", "'127.0.0.1:8080'"), ("[::1]", "'[::1]'"),
    ("http://localhost", "'http://localhost'"), (" localhost", "' localhost'"), ("local host", "'local host'"),
    ("-gw", "'-gw'"), ("gw-", "'gw-'"), ("gw..example", "'gw..example'"), (".", "'.'"), ("a" * 64, repr("a" * 64)),
    ("a" * 63 + "." + "a" * 190, repr("a" * 63 + "." + "a" * 190)), ("gwé", "'gwé'"), ("lo\ncalhost", "'lo\\ncalhost'"),
]
"""Addresses to listen on that ``gwlab.lab.start`` and ``--host`` refuse, as their
messages show them."""


def test_a_host_is_an_ip_address_or_a_host_name():
    for host in GOOD_HOSTS:
        assert config.run_argument("host", host, "--host") == host
    for host, shown in BAD_HOSTS:
        with pytest.raises(ConfigError) as error:
            config.run_argument("host", host, "--host")
        assert str(error.value) == f"--host = {shown}: expected {config.RUN_ARGUMENTS['host']['allowed']}"


def test_the_documented_examples_of_numbers_that_used_to_validate():
    def message(data):
        with pytest.raises(ConfigError) as error:
            config.from_dict(data)
        return str(error.value)

    assert message({"limiter": {"rate": 10**400}}) == (
        "scenario: limiter.rate = 1E+400: expected a number >= 0.001 and <= 1e+06")
    assert message({"limiter": {"rate": 1e-310}}) == (
        "scenario: limiter.rate = 1e-310: expected a number >= 0.001 and <= 1e+06")
    assert message({"providers": {"p1": {"distribution": "lognormal", "latency": 1.0, "p99": 1e308}}}) == (
        "scenario: providers.p1.p99 = 1e+308: expected a number >= 0 and <= 31536000")
    assert message({"providers": {"p1": {"distribution": "lognormal", "latency": 1.0, "p99": 1000.5}}}) == (
        "scenario: providers.p1.p99 = 1000.5: expected a log-normal p99 greater than its median latency (1),"
        " which must be > 0, and at most 1000 times it")
    assert message({"providers": {n: {"weight": 1.7e308} for n in ("p1", "p2", "p3")}}) == (
        "scenario: providers.p1.weight = 1.7e+308: expected a number >= 0 and <= 1e+06")
    assert message({"providers": {f"p{i}": {} for i in range(config.MAX_PROVIDERS + 1)}}) == (
        "scenario: providers = a table: expected at most 100 providers, not 101")
    assert message({"workload": {"clients": 100_001}}) == (
        "scenario: workload.clients = 100001: expected a whole number >= 1 and <= 100000")
    assert message({"limiter": {"rate": -(10**5000)}}) == (
        "scenario: limiter.rate = -1E+5000: expected a number >= 0.001 and <= 1e+06")


def _nested(depth: int, inner):
    for _ in range(depth):
        inner = {"a": inner}
    return inner


@pytest.mark.parametrize("depth", [5, 1000, 100_000])
def test_data_nested_deeper_than_a_scenario_is_refused_without_recursion(depth):
    deep_list = 1.0
    for _ in range(depth - 3):
        deep_list = [deep_list]
    cases = [
        ({"limiter": _nested(depth - 1, 1.0)}, "scenario: " + config.cut("limiter" + ".a" * 3)),
        ({"providers": {"p1": {"weight": deep_list}}}, "scenario: providers.p1.weight[0]"),
        ({"events": [{"at": 1, "limiter": _nested(depth - 1, 1.0)}]},
         "scenario: event at 1 s: " + config.cut("limiter" + ".a" * 3)),
    ]
    for data, start in cases:
        with pytest.raises(ConfigError) as error:
            config.from_dict(data)
        assert str(error.value) == (f"{start}: data nested {depth} levels deep: expected at most 3 levels "
                                    "(the scenario, a section, a provider) and a field's value")


@pytest.mark.parametrize("data, message", [
    ({"providers": {"p1": {"weight": [1]}}}, "providers.p1.weight = [1]: expected a number >= 0 and <= 1e+06"),
    ({"providers": {"p1": {"weight": {"a": 1}}}}, "providers.p1.weight = a table: expected a number >= 0 and <= 1e+06"),
    ({"limiter": {"rate": [[1]]}}, "limiter.rate = an array: expected a number >= 0.001 and <= 1e+06"),
    ({"gateway": {"fallback": ["reject"]}}, "gateway.fallback = an array: expected one of 'soonest', 'panic', 'reject'"),
    ({"retry": {"retry_on": [[502]]}}, "retry.retry_on = an array: expected a list of distinct statuses among "
                                       "[429, 502, 504]"),
], ids=["array for a number", "table for a number", "arrays in a section's field", "array for a choice",
        "array in a list"])
def test_a_table_or_array_in_a_fields_place_is_named_by_that_fields_check(data, message):
    with pytest.raises(ConfigError) as error:
        config.from_dict(data)
    assert str(error.value) == f"scenario: {message}"


def test_a_scenario_at_the_deepest_allowed_nesting_is_fine():
    scenario = config.from_dict({"providers": {"p1": {"weight": 2}}, "events": [
        {"at": 1, "providers": {"p1": {"weight": 3}}}]})
    assert scenario.to_dict()["events"] == [{"at": 1.0, "providers": {"p1": {"weight": 3}}}]


def test_an_unknown_key_is_shown_cut_when_it_is_long():
    with pytest.raises(ConfigError) as error:
        config.from_dict({"limiter": {"r" * 10**6: 1}})
    assert str(error.value) == (f"scenario: unknown key {'limiter.' + 'r' * (config.SHOWN_CHARS - 8) + '...'!r}; "
                                "allowed: rate, burst, tpm, default_max_tokens, backend, redis_url, redis_prefix, "
                                "redis_timeout, redis_failure")


def test_values_are_shown_in_one_short_line():
    with pytest.raises(ConfigError) as error:
        config.from_dict({"limiter": {"rate": ["x" * 10**6]}})
    assert str(error.value) == "scenario: limiter.rate = an array: expected a number >= 0.001 and <= 1e+06"
    with pytest.raises(ConfigError) as error:
        config.from_dict({"breaker": {"failure_threshold": 2**64 - 1}})
    assert str(error.value) == (
        "scenario: breaker.failure_threshold = 18446744073709551615: expected a whole number >= 1 and <= 1000000")



@pytest.mark.parametrize("value, shown", [
    # as TOML or JSON writes it, as it was given
    (None, "null"),
    (True, "true"),
    (2**64, "18446744073709551616"),
    (-(2**100), "-1267650600228229401496703205376"),
    (10**40 - 1, "9" * 40),
    ("fast", "'fast'"),
    (datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.timezone.utc), "1979-05-27T07:32:00+00:00"),
    (datetime.date(1979, 5, 27), "1979-05-27"),
    (datetime.time(7, 32, 0, 999000), "07:32:00.999000"),
    # described when it cannot be one short line
    (10**40, "1E+40"),
    (-(10**400), "-1E+400"),
    ({"a": 1}, "a table"),
    ([None], "an array"),
    ([429, 1.5], "[429, 1.5]"),
    ([], "[]"),
    # cut when it is long
    ("x" * config.SHOWN_CHARS, repr("x" * config.SHOWN_CHARS)),
    ("x" * 10**6, repr("x" * config.SHOWN_CHARS + "...")),
    ([1.5] * 10**6, "[" + ", ".join(["1.5"] * 61) + ", ... (1000000 numbers)]"),
])
def test_a_value_is_shown_as_given(value, shown):
    with pytest.raises(ConfigError) as error:
        config.from_dict({"breaker": {"failure_threshold": value}})
    assert str(error.value) == \
        f"scenario: breaker.failure_threshold = {shown}: expected a whole number >= 1 and <= 1000000"


def test_a_toml_value_is_shown_as_written(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[limiter]\nrate = 1979-05-27T07:32:00\n")
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert str(error.value) == f"{path}: limiter.rate = 1979-05-27T07:32:00: expected a number >= 0.001 and <= 1e+06"


@pytest.mark.parametrize("url, shown", [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:s3cret@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
    ("rediss://user:s3cret@host", "rediss://user:***@host"),
    ("redis://user@host/1", "redis://user@host/1"),
    ("redis://u:s3c@ret@host:1/0", "redis://u:***@host:1/0"),
    ("unix://:s3cret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ("redis://host/0?password=s3cret&socket_timeout=1", "redis://host/0?password=***&socket_timeout=1"),
    ("redis://host/0?pass%77ord=s3cret#x", "redis://host/0?pass%77ord=***#x"),
    ("user:s3cret@host", "***@host"),
])
def test_a_urls_password_is_redacted_and_the_rest_kept_as_given(url, shown):
    assert config.redacted(url) == shown


FORM = "a redis:// or rediss:// URL (or unix:// for a socket)"
PORT = f"{FORM} with a port from 1 to 65535, or none for 6379"
SPLIT = f"{FORM} that urllib.parse can split: an IPv6 host in brackets, no other brackets"
DB = f"{FORM} with a database number from 0 to 2147483646 as its path, such as /0, or none"
QUERY = f"{FORM} with no query arguments but db, username, password (db a number from 0 to 2147483646)"
HOST = f"{FORM} with a host, such as 'redis://127.0.0.1:6379/0'"
UNIX = "unix:///PATH, the socket's path, with no host or port"
REDIS_URLS_REFUSED = [
    # (url, as the message shows it, what it says is expected): one row per kind of URL redis-py refuses,
    # would fail with at its first call, or would read otherwise than written
    ("http://127.0.0.1:6379", "http://127.0.0.1:6379", FORM),
    ("REDIS://127.0.0.1:6379/0", "REDIS://127.0.0.1:6379/0", FORM),
    ("redis://127.0.0.1:notaport/0", "redis://127.0.0.1:notaport/0", PORT),
    ("redis://127.0.0.1:99999/0", "redis://127.0.0.1:99999/0", PORT),
    ("redis://127.0.0.1:0/0", "redis://127.0.0.1:0/0", PORT),
    ("redis://127.0.0.1:+6379/0", "redis://127.0.0.1:+6379/0", PORT),
    ("redis://:s3cret@127.0.0.1:x/0", "redis://:***@127.0.0.1:x/0", PORT),
    ("redis://[::1/0", "redis://[::1/0", SPLIT),
    ("redis://:s3cret@\u2100/0", "redis://:***@\u2100/0", SPLIT),  # NFKC makes it a/c: a / in the host
    ("redis://", "redis://", HOST),
    ("rediss://:s3cret@:6380/0", "rediss://:***@:6380/0", HOST),
    ("redis://h/abc", "redis://h/abc", DB),
    ("redis://h/-1", "redis://h/-1", DB),
    ("redis://h/1/2", "redis://h/1/2", DB),
    ("redis://h/2147483647", "redis://h/2147483647", DB),
    ("redis://h/" + "1" * 5000, ("redis://h/" + "1" * 5000)[:config.SHOWN_CHARS] + "...", DB),
    ("redis://h/0?db=x", "redis://h/0?db=x", QUERY),
    ("redis://h/0?db=", "redis://h/0?db=", QUERY),
    ("redis://h/0?foo=bar", "redis://h/0?foo=bar", QUERY),
    ("redis://h/0?password=s3cret&socket_timeout=1", "redis://h/0?password=***&socket_timeout=1", QUERY),
    ("unix://", "unix://", UNIX),
    ("unix://run/redis.sock", "unix://run/redis.sock", UNIX),
    ("unix://:6379/run/redis.sock", "unix://:6379/run/redis.sock", UNIX),
    ("unix:///run/redis.sock?db=x", "unix:///run/redis.sock?db=x", QUERY),
]


@pytest.mark.parametrize("url, shown, expected", REDIS_URLS_REFUSED, ids=[u[:40] for u, _, _ in REDIS_URLS_REFUSED])
def test_a_redis_url_redis_py_would_not_read_as_written_is_refused_naming_what_is_expected(url, shown, expected):
    with pytest.raises(ConfigError) as error:
        config.from_dict({"limiter": {"redis_url": url}})
    assert str(error.value) == f"scenario: limiter.redis_url = {shown!r}: expected {expected}"


REDIS_URLS = [
    # (url, what redis-py's connection takes from it)
    ("redis://127.0.0.1:6379/0", {"host": "127.0.0.1", "port": 6379, "db": 0}),
    ("redis://10.0.0.5", {"host": "10.0.0.5", "port": 6379, "db": 0}),
    ("redis://h/", {"host": "h", "port": 6379, "db": 0}),
    ("rediss://user:s3c@ret@h:6380/2", {"host": "h", "port": 6380, "db": 2, "username": "user", "password": "s3c@ret"}),
    ("redis://[::1]:1/2147483646", {"host": "::1", "port": 1, "db": 2147483646}),
    ("redis://h:65535/0?db=3&password=s3cret&username=u",
     {"host": "h", "port": 65535, "db": 3, "password": "s3cret", "username": "u"}),
    ("redis://h/0#x", {"host": "h", "port": 6379, "db": 0}),
    ("unix:///run/redis.sock", {"path": "/run/redis.sock", "db": 0}),
    ("unix://:s3cret@/run/redis.sock?db=1", {"path": "/run/redis.sock", "db": 1, "password": "s3cret"}),
]


@pytest.mark.parametrize("url, taken", REDIS_URLS)
def test_a_redis_url_taken_is_one_redis_py_reads_as_written(url, taken):
    assert config.from_dict({"limiter": {"redis_url": url}}).limiter.redis_url == url
    connection = pytest.importorskip("redis.asyncio").ConnectionPool.from_url(url)
    connection = connection.connection_class(**connection.connection_kwargs)  # no unknown argument: no TypeError
    assert {key: getattr(connection, key) for key in taken} == taken


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["redis", "rediss", "unix", "http"]),
       user=st.sampled_from(["", "u@", ":s3cret@", "u:p@"]),
       host=st.sampled_from(["", "h", "127.0.0.1", "[::1]", "[::1", "h]"]),
       port=st.sampled_from(["", ":", ":0", ":1", ":6379", ":65535", ":65536", ":x", ": 1"]),
       path=st.sampled_from(["", "/", "/0", "/15", "/x", "/1/2", "/run/redis.sock"]),
       query=st.sampled_from(["", "?db=1", "?db=x", "?db=", "?foo=1", "?password=p&db=2", "?socket_timeout=1"]))
def test_every_redis_url_taken_is_read_by_redis_py_as_urllib_splits_it(scheme, user, host, port, path, query):
    url = f"{scheme}://{user}{host}{port}{path}{query}"
    try:
        config.from_dict({"limiter": {"redis_url": url}})
    except ConfigError:
        return
    pool = pytest.importorskip("redis.asyncio").ConnectionPool.from_url(url)
    connection = pool.connection_class(**pool.connection_kwargs)
    parts, args = urlsplit(url), dict(parse_qsl(urlsplit(url).query))
    if scheme == "unix":
        assert connection.path == parts.path
    else:
        assert (connection.host, connection.port) == (parts.hostname, parts.port or 6379)
    assert connection.db == int(args.get("db", parts.path[1:] if scheme != "unix" else "") or 0)


def test_a_scenario_shows_the_password_of_its_redis_url_nowhere():
    secret, shown = "redis://:s3cret@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"
    scenario = config.from_dict({"limiter": {"redis_url": secret},
                                 "events": [{"at": 1, "limiter": {"redis_url": secret, "rate": 5}}]})
    data = scenario.to_dict()
    assert data["limiter"]["redis_url"] == secret and config.from_dict(data) == scenario  # it round-trips
    assert config.shown(data) == {**data, "limiter": {**data["limiter"], "redis_url": shown},
                                  "events": [{"at": 1.0, "limiter": {"redis_url": shown, "rate": 5}}]}
    assert "s3cret" not in repr(scenario) and f"redis_url={shown!r}" in repr(scenario)
    assert repr(config.LimiterConfig()) == (
        "LimiterConfig(rate=1000.0, burst=1000.0, tpm=0, default_max_tokens=4096, backend='local', "
        "redis_url='redis://127.0.0.1:6379/0', redis_prefix='gwlab', redis_timeout=0.05, redis_failure='open')")


def test_a_scenario_built_in_code_is_checked_by_every_shell():
    bad = dataclasses.replace(Scenario(), limiter=config.LimiterConfig(rate=1e-310))
    deep = dataclasses.replace(Scenario(), events=(Event(1.0, _nested(100_000, 1.0)),))
    config.check(Scenario())
    with pytest.raises(ConfigError, match=r"^scenario: limiter\.rate = 1e-310: expected "):
        config.check(bad)
    with pytest.raises(ConfigError, match=r"^scenario: a\.a\.a\.a: data nested 100000 levels deep: "):
        config.check(deep)
    from gwlab.server import Gateway
    from gwlab.sim import simulate
    with pytest.raises(ConfigError, match=r"^Gateway\(scenario=\.\.\.\): limiter\.rate = 1e-310: "):
        Gateway(bad)
    with pytest.raises(ConfigError, match=r"^scenario: limiter\.rate = 1e-310: "):
        simulate(bad, duration=1)
    from gwlab import lab
    with pytest.raises(ConfigError, match=r"^gwlab\.lab\.start\(scenario=\.\.\.\): limiter\.rate = 1e-310: "):
        lab.start(bad)


@pytest.mark.parametrize("given, taken", [
    (502, 502), (502.0, 502), (np.float64(502.0), 502), (fractions.Fraction(1004, 2), 502),
    (502.5, None), (float("nan"), None), (True, None), ("502", None), (400, None),
])
def test_a_status_in_a_list_is_a_whole_number_as_an_int_field_takes_one(given, taken):
    # retry.retry_on, the one list field, holds statuses: 502.0 is 502, as clients = 2.0 is 2.
    data = {"retry": {"retry_on": [given, 504]}}
    if taken is None:
        with pytest.raises(ConfigError, match=r"^scenario: retry.retry_on = .*: expected a list of distinct statuses"):
            config.from_dict(data)
    else:
        assert config.from_dict(data).retry.retry_on == (taken, 504)
        assert type(config.from_dict(data).retry.retry_on[0]) is int


@pytest.mark.parametrize("port, metrics_port, replicas, clash", [
    (8080, 9090, 1, None),
    (0, 0, 1, None),  # free ports never clash
    (0, 9090, 4, None),
    (9090, 0, 4, None),
    (9090, 9090, 1, "--port = 9090 and --metrics-port = 9090"),
    (9089, 9090, 3, None),
    (9090, 9090, 3, "--port = 9090 is the metrics port of replica 0 (--metrics-port = 9090, plus 0)"),
    (9092, 9090, 3, "--port = 9092 is the metrics port of replica 2 (--metrics-port = 9090, plus 2)"),
    (9093, 9090, 3, None),
])
def test_the_gateway_and_each_metrics_server_need_a_port_each(port, metrics_port, replicas, clash):
    if clash is None:
        config.distinct_ports(port, metrics_port, replicas)
    else:
        with pytest.raises(config.ConfigError) as error:
            config.distinct_ports(port, metrics_port, replicas)
        assert str(error.value) == f"{clash}: the gateway and its metrics need a port each"
