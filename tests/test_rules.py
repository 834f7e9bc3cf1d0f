"""The Prometheus rules (``prometheus/rules.yml``): promtool accepts them and passes their
unit tests (``prometheus/rules_test.yml``: the burn-rate alerts on both windows, the 429
ratio, a flapping breaker, the Redis limiter's errors, the recorded numbers), and the
recording rules are the README's queries with ``job`` kept."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support import readme_table

pytestmark = pytest.mark.timeout(60)

RULES = Path(__file__).resolve().parent.parent / "prometheus"


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True, cwd=RULES, timeout=50)


def test_promtool_accepts_the_rules():
    done = run_promtool("check", "rules", "rules.yml")
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert "SUCCESS: 29 rules found" in done.stdout


def test_the_rules_pass_their_unit_tests():
    done = run_promtool("test", "rules", "rules_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["Unit", "Testing:", "rules_test.yml", "SUCCESS"]


def recorded() -> dict[str, str]:
    """Each recording rule's expression (whitespace collapsed) by the name it records."""
    text = (RULES / "rules.yml").read_text(encoding="utf-8")
    return {name: expr for name, expr in re.findall(r"- record: (\S+)\n\s+expr: (.+)", text)}


def with_job(query: str) -> str:
    """A README query as the rules record it: every sum keeps ``job``."""
    return query.replace("sum by (", "sum by (job, ").replace("sum(", "sum by (job) (")


def test_the_recording_rules_are_the_readmes_queries_per_job():
    rules = recorded()
    rows = [row for row in readme_table("The PromQL for each number") if row[2] != "-"]
    assert len(rows) == 13
    for number, query, name in rows:
        assert rules[name.split()[0]] == with_job(query), number
    p99 = next(query for number, query, _ in rows if number.startswith("p99 latency"))
    for q in ("0.5", "0.95"):
        assert rules[f"job:gwlab_request_duration_seconds:p{round(float(q) * 100)}_rate1m"] == \
            with_job(p99.replace("0.99", q, 1))


def test_the_slo_target_is_one_rule_that_every_burn_rate_alert_reads():
    text = (RULES / "rules.yml").read_text(encoding="utf-8")
    slo = text.split("- name: gwlab_slo", 1)[1].split("- name:", 1)[0]
    assert recorded()["gwlab:slo_availability:target"] == "vector(0.99)"
    assert slo.count("0.99") == 1 and slo.count("0.01") == 0
    burns = re.findall(r"alert: GwlabErrorBudgetBurn\w+\n(?:.*\n){1,2}?\s+expr: \|\n(.+)\n(.+)\n", text)
    assert len(burns) == 3
    assert all(line.count("scalar(gwlab:slo_error_budget:ratio)") == 1 for burn in burns for line in burn)
