"""The monitoring that ships in deploy/: Prometheus' config and alerts, the Grafana dashboard.

- ``promtool`` checks the config and the rules and runs the rules' unit tests
  (``deploy/prometheus/alerts_test.yml``); a missing promtool fails under CI.
- Every PromQL expression (alerts, dashboard panels, the unit tests' series)
  names only metrics offpost exports: read from the source, where each
  ``Counter``/``Gauge``/``Histogram`` names its metric, with the suffixes
  prometheus_client adds (``_total``; ``_bucket``, ``_sum``, ``_count``), plus
  Prometheus' own ``up``.
- Every alert has a severity, a summary, a description, a runbook entry in
  docs/monitoring.md, and a firing and a quiet case in the unit tests.
- The scrape jobs name the services of docker-compose.yml, on the port they serve.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import service_missing

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "offpost.json"
COMPOSE = REPO / "docker-compose.yml"
MONITORING_DOC = REPO / "docs" / "monitoring.md"
SOURCE = REPO / "src" / "offpost"

#: The job of each role, the compose service it scrapes, and the port there.
JOBS = {
    "offpost-api": ("api", 8000),
    "offpost-worker": ("worker", 9100),
    "offpost-webhooks": ("webhooks", 9100),
    "offpost-dispatcher": ("dispatcher", 9100),
}

# --- what offpost exports ---------------------------------------------------------------------

#: prometheus_client's constructors (and metric families) by the kind of metric they make.
KINDS = {
    "Counter": "counter",
    "CounterMetricFamily": "counter",
    "Gauge": "gauge",
    "GaugeMetricFamily": "gauge",
    "Histogram": "histogram",
    "HistogramMetricFamily": "histogram",
    "Summary": "summary",
    "SummaryMetricFamily": "summary",
}

#: Also exported, declared here in case the source that registers them is not read
#: above (added with the per-role /metrics): the webhooks role counts deliveries,
#: the dispatcher role its ticks and how late it hands posts to the workers.
ALSO_EXPORTED = {
    "offpost_webhook_deliveries": "counter",
    "offpost_dispatcher_ticks": "counter",
    "offpost_dispatch_lateness_seconds": "histogram",
}

#: Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up"}


def exposed_names(name: str, kind: str) -> set[str]:
    """The names a metric's samples carry in the text exposition (what PromQL selects)."""
    if kind == "counter":
        return {name.removesuffix("_total") + "_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count"}
    return {name}


def declared_metrics(tree: ast.AST) -> dict[str, str]:
    """``offpost_*`` metrics a module creates: name → kind, from constructor calls."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if called not in KINDS:
            continue
        args = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "name")]
        for arg in args:
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("offpost_"):
                found[str(arg.value)] = KINDS[called]
    return found


def source_metrics() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        found.update(declared_metrics(ast.parse(path.read_text(), filename=str(path))))
    return found


def exported_names() -> set[str]:
    names = set(PROMETHEUS_SERIES)
    for name, kind in {**ALSO_EXPORTED, **source_metrics()}.items():
        names |= exposed_names(name, kind)
    return names


# --- the metric names of a PromQL expression ---------------------------------------------------

_GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (strings, label matchers and lists set aside)."""
    text = _GRAFANA_VARIABLE.sub("1m", expr)
    text = _STRING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {m for m in _IDENTIFIER.findall(text) if m.lower() not in _KEYWORDS}


def test_metric_names_finds_selectors_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(a_bucket{job=~"x|y", le!="1e3"}[$__rate_interval])))'
        " / on (job) group_left(kind) b_total offset 5m > bool 1e3"
        ' and ignoring(x) label_replace(c, "d", "$1", "e", "(.*)") or sum(d) by (instance)'
        ' unless {__name__="hidden"} + Inf_metric + inf'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d", "Inf_metric"}


def test_the_source_declares_the_documented_metrics() -> None:
    """The scan of the source works: it finds the metrics the modules' docstrings list."""
    declared = source_metrics()
    assert {
        "offpost_posts": "gauge",
        "offpost_posts_due_not_dispatched": "gauge",
        "offpost_posts_due_oldest_age_seconds": "gauge",
        "offpost_credentials": "gauge",
        "offpost_queue_depth_messages": "gauge",
        "offpost_posts_published": "counter",
        "offpost_posts_failed": "counter",
        "offpost_publish_outcomes": "counter",
        "offpost_publish_duration_seconds": "histogram",
        "offpost_schedule_lateness_seconds": "histogram",
        "offpost_graph_errors": "counter",
        "offpost_graph_usage_ratio": "gauge",
    }.items() <= declared.items()
    # Where the source declares one of the extra metrics, it agrees on its kind.
    for name, kind in ALSO_EXPORTED.items():
        assert declared.get(name, kind) == kind, name


# --- the files --------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def test_every_expression_names_only_exported_metrics() -> None:
    exported = exported_names()
    exprs = [(rule["alert"], rule["expr"]) for rule in alert_rules()] + dashboard_exprs()
    for test in load_yaml(ALERTS_TEST)["tests"]:
        exprs += [(test["name"], series["series"]) for series in test["input_series"]]
    unknown = {(where, name) for where, expr in exprs for name in metric_names(expr) - exported}
    assert not unknown, f"metrics offpost does not export: {sorted(unknown)}"
    # The scan saw the expressions: each names at least one metric.
    assert all(metric_names(expr) for _, expr in exprs)


# --- promtool ---------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        service_missing("promtool (apt-get install prometheus)", FileNotFoundError("promtool"))
        raise AssertionError("unreachable: service_missing skips or fails")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_config_and_its_rule_files() -> None:
    # Rule files are resolved next to the config: this checks alerts.yml too.
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_alerts_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --- the alerts -------------------------------------------------------------------------------


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    doc = MONITORING_DOC.read_text()
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        name = rule["alert"]
        assert name.startswith("Offpost"), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        assert f"### {name}" in doc, f"docs/monitoring.md has no runbook for {name}"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases: dict[str, set[bool]] = {}
    tests = load_yaml(ALERTS_TEST)
    assert tests["rule_files"] == [ALERTS.name]
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for name in (rule["alert"] for rule in alert_rules()):
        assert cases.get(name) == {True, False}, f"{name}: firing and quiet cases {cases.get(name)}"


def test_the_role_alert_knows_every_job() -> None:
    """A role with no target at all (DNS finds none) is caught: absent() for each job."""
    [role_down] = [rule for rule in alert_rules() if rule["alert"] == "OffpostRoleDown"]
    for job in JOBS:
        assert f'absent(up{{job="{job}"}})' in role_down["expr"], job


# --- the scrape config ------------------------------------------------------------------------


def test_one_scrape_job_per_role_on_the_compose_services() -> None:
    config = load_yaml(CONFIG)
    assert config["rule_files"] == [ALERTS.name]
    services = load_yaml(COMPOSE)["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(JOBS)
    for name, (service, port) in JOBS.items():
        job = jobs[name]
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        targets = [t for static in job.get("static_configs", []) for t in static["targets"]]
        for dns in job.get("dns_sd_configs", []):
            # Every container of a scaled service, found by its name.
            assert dns["type"] == "A", name
            targets += [f"{host}:{dns['port']}" for host in dns["names"]]
        assert targets == [f"{service}:{port}"], name
        assert service in services, f"{name} scrapes {service}, which compose does not run"


def test_compose_serves_metrics_where_prometheus_scrapes() -> None:
    """The raw file (docker-compose config renders it: tests/e2e/test_compose.py)."""
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    for name, (service, port) in JOBS.items():
        if service == "api":
            # The API serves /metrics on its own port.
            command = services["api"]["command"]
            assert command[command.index("--port") + 1] == str(port), name
            continue
        environment = services[service]["environment"]
        assert environment["OFFPOST_METRICS_PORT"] == str(port), name
        assert environment["OFFPOST_METRICS_HOST"] == "0.0.0.0", name
        assert "ports" not in services[service], f"{service}: /metrics stays on compose's network"
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


# --- the dashboard ----------------------------------------------------------------------------


def test_the_dashboard_is_importable_with_any_prometheus() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"]
    assert board["title"]
    [source_input] = board["__inputs"]
    assert (source_input["name"], source_input["type"], source_input["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    # A variable of the same name: provisioned from a file (no import step), it still resolves.
    [variable] = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    panels = list(dashboard_panels(board["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            assert target["expr"].strip(), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


@pytest.mark.parametrize(
    ("panel", "metrics"),
    [
        ("Throughput", {"offpost_posts_published_total", "offpost_posts_failed_total"}),
        ("Schedule lateness", {"offpost_schedule_lateness_seconds_bucket"}),
        ("Failures by reason", {"offpost_posts_failed_total"}),
        ("Graph usage", {"offpost_graph_usage_ratio"}),
        ("Graph errors by code", {"offpost_graph_errors_total"}),
        ("Queue depth", {"offpost_queue_depth_messages"}),
        (
            "Due, not dispatched",
            {"offpost_posts_due_not_dispatched", "offpost_posts_due_oldest_age_seconds"},
        ),
        ("Credentials by state", {"offpost_credentials"}),
        ("Webhook deliveries by outcome", {"offpost_webhook_deliveries_total"}),
        ("Dispatcher ticks", {"offpost_dispatcher_ticks_total"}),
        ("Dispatch lateness", {"offpost_dispatch_lateness_seconds_bucket"}),
    ],
)
def test_the_dashboard_has_the_panel(panel: str, metrics: set[str]) -> None:
    exprs = [expr for title, expr in dashboard_exprs() if title == panel]
    assert exprs, f"no panel {panel!r}"
    assert metrics <= set().union(*(metric_names(expr) for expr in exprs))


def test_lateness_panels_show_p50_p95_p99() -> None:
    for title in ("Schedule lateness", "Dispatch lateness", "Publish duration"):
        exprs = [expr for panel, expr in dashboard_exprs() if panel == title]
        quantiles = sorted(re.findall(r"histogram_quantile\((0\.\d+)", " ".join(exprs)))
        assert quantiles == ["0.5", "0.95", "0.99"], title
