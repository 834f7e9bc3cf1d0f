"""The README's numbers and queries are the code's: defaults, PromQL and prometheus.yml."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from gwlab import config
from tests.conftest import require_tool
from tests.support import check_promql

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table_rows(heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``heading``."""
    section = README.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([c.strip().replace("`", "") for c in line.strip("|").split(" | ")])
        elif rows:
            break
    return rows[2:]


def test_readme_defaults_are_the_code_defaults():
    defaults = config.Scenario()
    rows = {row[0]: row[1] for row in _table_rows("Every default is one named constant")}
    for dotted, shown in rows.items():
        if not dotted.count(".") == 1 or dotted.startswith("providers."):
            continue
        section, field = dotted.split(".")
        assert shown == str(getattr(getattr(defaults, section), field)), dotted
    for name, weight, latency, error_rate in config.SEED_PROVIDERS:
        assert rows[f"providers.{name}"] == (
            f"weight {weight:g}, latency {latency:.1f} s, error rate {error_rate:.2f}"
        )
    assert rows["--seed"] == str(config.SEED)
    assert rows["--host, --port, --metrics-port"] == (
        f"{config.HOST}, {config.PORT}, {config.METRICS_PORT}"
    )


def test_every_scenario_field_is_in_the_readme_table():
    rows = {row[0] for row in _table_rows("Every default is one named constant")}
    documented = {f"{s}.{f}" for s, fields in config.Scenario().to_dict().items()
                  if s in ("limiter", "workload", "gateway") for f in fields if f != "mode"}
    documented |= {f"breaker.{f}" for f in config.Scenario().to_dict()["breaker"] if f != "enabled"}
    assert documented <= rows


def test_readme_states_the_range_of_every_number():
    ranged = {f"{section}.{f.name}": f.metadata["allowed"]
              for section, cls in (("gateway", config.GatewayConfig), ("limiter", config.LimiterConfig),
                                   ("breaker", config.BreakerConfig), ("providers.NAME", config.ProviderConfig),
                                   ("workload", config.WorkloadConfig), ("events[]", config.Event))
              for f in dataclasses.fields(cls) if "hi" in f.metadata}
    ranged |= {name: spec["allowed"] for name, spec in config.RUN_RANGES.items()}
    assert {row[0]: row[1] for row in _table_rows("Every number has a range")} == ranged
    stated = " ".join(README.split("Every number has a range", 1)[1].split("## Metrics", 1)[0].split())
    assert f"at most {config.MAX_PROVIDERS} providers" in stated
    assert f"at most {config.MAX_P99_RATIO:g} times it" in stated
    assert f"at most {config.MAX_BINS} time bins" in stated
    assert f"weights sum to at most {config.MAX_PROVIDERS * config.MAX_WEIGHT:g}" in stated
    assert "at most three tables deep" in stated and config.MAX_DEPTH == 3


def test_readme_promql_parses(tmp_path):
    promtool = require_tool("promtool")
    queries = [row[1] for row in _table_rows("The PromQL for each number")]
    assert len(queries) >= 8
    done = check_promql(promtool, queries, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_yml_is_valid():
    promtool = require_tool("promtool")
    done = subprocess.run([promtool, "check", "config", str(ROOT / "prometheus.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
