"""The README's numbers and queries are the code's: defaults, PromQL and prometheus.yml; and
the repository's text points at nothing outside it."""

from __future__ import annotations

import dataclasses
import subprocess
import tomllib
import typing
from pathlib import Path

from gwlab import config, stats
from tests.conftest import require_tool
from tests.support import README, check_promql, readme_table

ROOT = Path(__file__).resolve().parent.parent


def scenario_fields() -> set[str]:
    """Every field a scenario can set, dotted as in the README (``limiter.rate``,
    ``providers.NAME.weight``), found by walking the dataclasses of :mod:`gwlab.config`: a
    field added there is a field the README and the seed file must show."""
    hints = typing.get_type_hints(config.Scenario)
    fields = set()
    for section in dataclasses.fields(config.Scenario):
        kind = hints[section.name]
        if dataclasses.is_dataclass(kind):
            fields |= {f"{section.name}.{f.name}" for f in dataclasses.fields(kind)}
        elif typing.get_args(kind) == (config.ProviderConfig, ...):
            fields |= {f"{section.name}.NAME.{f.name}" for f in dataclasses.fields(config.ProviderConfig)
                       if f.name != "name"}
        else:
            # Events are patches in time, documented in their own section; a new section of
            # another shape has to be placed here.
            assert section.name == "events", f"a scenario section of unknown shape: {section.name}"
    return fields


def _shown(value: object) -> str:
    """A default as the README shows it: TOML's spelling of booleans and arrays."""
    if isinstance(value, tuple):
        return str(list(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_scenario_fields_walks_every_section():
    fields = scenario_fields()
    assert {f.split(".")[0] for f in fields} == {"gateway", "limiter", "breaker", "providers", "workload", "retry"}
    assert {"breaker.enabled", "workload.mode", "providers.NAME.p99", "providers.NAME.outage"} <= fields


def test_readme_defaults_are_the_code_defaults():
    defaults = config.Scenario()
    provider = config.ProviderConfig(name="NAME")
    rows = {row[0]: row[1] for row in readme_table("Every default is one named constant")}
    for dotted, shown in rows.items():
        if dotted.startswith("providers.NAME."):
            assert shown == _shown(getattr(provider, dotted.rsplit(".", 1)[1])), dotted
        elif dotted.count(".") == 1 and not dotted.startswith("providers."):
            section, field = dotted.split(".")
            assert shown == _shown(getattr(getattr(defaults, section), field)), dotted
    for name, weight, latency, error_rate in config.SEED_PROVIDERS:
        assert rows[f"providers.{name}"] == (
            f"weight {weight:g}, latency {latency:.1f} s, error rate {error_rate:.2f}"
        )
    assert rows["--seed"] == str(config.SEED)
    assert rows["--host, --port, --metrics-port"] == (
        f"{config.HOST}, {config.PORT}, {config.METRICS_PORT}"
    )


def test_every_scenario_field_is_in_the_readme_table():
    rows = {row[0] for row in readme_table("Every default is one named constant")}
    assert sorted(scenario_fields() - rows) == []


def test_every_scenario_field_is_in_the_seed_file():
    # The seed file is the one to copy and edit: it spells out every field, for every provider.
    seed = tomllib.loads((ROOT / "scenarios" / "seed.toml").read_text(encoding="utf-8"))
    written = {f"{section}.{key}" for section, table in seed.items() if section != "providers" for key in table}
    for name, table in seed["providers"].items():
        missing = {f for f in scenario_fields() if f.startswith("providers.")} - {
            f"providers.NAME.{key}" for key in table}
        assert sorted(missing) == [], name
    assert sorted({f for f in scenario_fields() if not f.startswith("providers.")} - written) == []


def test_readme_states_the_range_of_every_number():
    ranged = {f"{section}.{f.name}": f.metadata["allowed"]
              for section, cls in (("gateway", config.GatewayConfig), ("limiter", config.LimiterConfig),
                                   ("breaker", config.BreakerConfig), ("providers.NAME", config.ProviderConfig),
                                   ("workload", config.WorkloadConfig), ("retry", config.RetryConfig),
                                   ("events[]", config.Event))
              for f in dataclasses.fields(cls) if "hi" in f.metadata}
    ranged |= {name: spec["allowed"] for name, spec in config.RUN_RANGES.items()}
    assert {row[0]: row[1] for row in readme_table("Every number has a range")} == ranged
    stated = " ".join(README.split("Every number has a range", 1)[1].split("## Metrics", 1)[0].split())
    assert f"at most {config.MAX_PROVIDERS} providers" in stated
    assert f"at most {config.MAX_P99_RATIO:g} times it" in stated
    assert f"at most {config.MAX_BINS} time bins" in stated
    assert f"weights sum to at most {config.MAX_PROVIDERS * config.MAX_WEIGHT:g}" in stated
    assert "at most three tables deep" in stated and config.MAX_DEPTH == 3


def test_readme_promql_parses(tmp_path):
    promtool = require_tool("promtool")
    queries = [row[1] for row in readme_table("The PromQL for each number")]
    assert len(queries) >= 8
    done = check_promql(promtool, queries, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_yml_is_valid():
    promtool = require_tool("promtool")
    done = subprocess.run([promtool, "check", "config", str(ROOT / "prometheus.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


OUTSIDE = ("../" + "shared", "DESIGN" + ".md")
"""Pointers to notes kept beside the repository, not in it (spelled in two pieces here, so
that this file does not match itself)."""


def test_nothing_points_outside_the_repository():
    texts = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml",
             *ROOT.glob("gwlab/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("benchmarks/*.md"),
             *ROOT.glob("tests/*.py"), *ROOT.glob("scenarios/*.toml"), *ROOT.glob("notebooks/**/*.ipynb")]
    found = [f"{path.relative_to(ROOT)}: {pointer}" for path in texts
             for pointer in OUTSIDE if pointer in path.read_text(encoding="utf-8")]
    assert found == []


def test_readme_states_the_bounds_on_a_runs_exit():
    from gwlab.cli import EXIT_BOUND, REPLICAS_EXIT_BOUND

    text = " ".join(README.split())
    assert f"within {EXIT_BOUND:g} s at most (`gwlab.cli.EXIT_BOUND`)" in text
    assert f"within {REPLICAS_EXIT_BOUND:g} s at most (`gwlab.cli.REPLICAS_EXIT_BOUND`)" in text


def test_the_readme_prints_the_status_table_of_the_code():
    assert stats.status_table() in README


ANSWERED = {
    "200: the provider answered": (200, "p1"),
    "4xx: a bad request": (400, "none"),
    "429: the gateway's limit": (429, "none"),
    "429: the provider's queue or own limit": (429, "p1"),
    "502: the provider failed": (502, "p1"),
    "503: every breaker open, `gateway.fallback = reject`": (503, "none"),
    "504: past `gateway.timeout`": (504, "p1"),
    "a stream failed after its first byte": (stats.STREAM_ERROR, "p1"),
}
"""A status and provider of each row of the status table whose request got an answer (a 499
and a transport error got none: a summary's ``admitted`` counts answers)."""


def test_what_summaries_count_as_admitted_follows_the_status_table():
    rows = {row.answer: row for row in stats.STATUS_TABLE}
    assert set(ANSWERED) == set(rows) - {
        "499: the client left (seen when its answer is written, or mid-stream at once), or a stop cut it off (a "
        "stream then ends with the error frame `gateway_stopped`, which the SDK raises), or the end of `gwlab run` "
        "did (its connection closed; its client counts the same 499)",
        "no HTTP answer (client side only)",
        "the client stopped waiting, `workload.timeout` (client side only)"}
    for answer, (status, provider) in ANSWERED.items():
        assert stats.admitted(status, provider) == (rows[answer].admitted == "yes"), answer


def test_the_readme_counts_a_providers_429_as_admitted_as_the_summary_does():
    rows = {row[0]: row[1] for row in readme_table("means one thing in all three:")}
    assert ("those that reached a provider: answered 200, 502, 504 or stream_error, or 429 by the provider (its "
            "queue or its own limit; the gateway's own 429 is not admitted)") in rows["offered, admitted, codes"]
    assert stats.admitted(stats.RATE_LIMITED, "p1") and not stats.admitted(stats.RATE_LIMITED, stats.NO_PROVIDER)


def test_readme_lists_every_tutorial_and_every_scenario():
    def first_cells(header: str) -> set[str]:
        rows = README.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
        return {row.strip("|").split(" | ")[0].strip().replace("`", "") for row in rows}

    notebooks = first_cells("| notebook | what it teaches |")
    tutorials = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")} - {"00_quickstart"}
    assert notebooks == tutorials
    scenarios = first_cells("| scenario | what happens |")
    assert scenarios == {f"scenarios/{p.name}" for p in (ROOT / "scenarios").glob("*.toml")}
