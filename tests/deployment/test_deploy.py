"""deploy/: Prometheus, its alerts, Alertmanager and Grafana agree with the code and each other.

The Prometheus configuration and the alert rules are checked by the real ``promtool`` (Debian
package ``prometheus``): ``check config``, ``check rules``, ``test rules`` and, for the scrape
targets' labels, ``check service-discovery``. Every PromQL expression, in the rules and in the
Grafana dashboard, may only use the metrics the phasestream processes export (``METRICS``
below, the one list of them) with their labels.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST_YML = DEPLOY / "prometheus" / "alerts_test.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "phasestream.json"
COMPOSE_FILE = ROOT / "docker-compose.yml"

CONSUMER_SERVICES = ("audit", "sla", "metrics", "rollback", "notify")
SEVERITIES = ("warning", "critical")
PROMTOOL_MISSING = (
    "promtool not found: install Debian's 'prometheus' package (apt-get install prometheus)"
)


@dataclass(frozen=True)
class Metric:
    kind: Literal["counter", "gauge", "histogram"]
    labels: frozenset[str]


_PHASE = frozenset({"phase"})
_CONSUMER = frozenset({"consumer"})

# What the phasestream processes export on /metrics: the only names deploy/ may use.
METRICS: dict[str, Metric] = {
    "workflow_phase_started_total": Metric("counter", _PHASE),
    "workflow_phase_completed_duration_seconds": Metric("histogram", _PHASE),
    "workflow_phase_failed_duration_seconds": Metric("histogram", _PHASE),
    "workflow_phase_rolled_back_total": Metric("counter", _PHASE),
    "workflow_phase_sla_violations_total": Metric("counter", _PHASE | {"kind"}),
    "workflow_phase_in_flight": Metric("gauge", _PHASE),
    "workflow_phase_sla_threshold_seconds": Metric("gauge", _PHASE),
    "workflow_phase_oldest_running_age_seconds": Metric("gauge", _PHASE),
    "workflow_phase_running": Metric("gauge", _PHASE | {"state"}),
    "workflow_phase_ended_past_deadline_seconds": Metric("histogram", _PHASE),
    "phasestream_consumer_events_total": Metric("counter", _CONSUMER),
    "phasestream_consumer_invalid_events_total": Metric("counter", _CONSUMER),
    "phasestream_consumer_batch_duration_seconds": Metric("histogram", _CONSUMER),
    "phasestream_consumer_last_event_timestamp_seconds": Metric("gauge", _CONSUMER),
    "phasestream_consumer_last_applied_timestamp_seconds": Metric("gauge", _CONSUMER),
    "phasestream_consumer_lag_records": Metric("gauge", _CONSUMER | {"partition"}),
    "phasestream_consumer_lost_records_total": Metric("counter", _CONSUMER | {"partition"}),
}
# Labels Prometheus attaches to every scraped series (prometheus.yml sets `service`).
TARGET_LABELS = frozenset({"job", "instance", "service"})


def _series_labels() -> dict[str, frozenset[str]]:
    """Series name -> the labels it can carry: histograms are _bucket / _count / _sum."""
    series: dict[str, frozenset[str]] = {"up": TARGET_LABELS}
    for name, metric in METRICS.items():
        labels = metric.labels | TARGET_LABELS
        if metric.kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_count"] = labels
            series[f"{name}_sum"] = labels
        else:
            series[name] = labels
    return series


SERIES = _series_labels()

PROMQL_FUNCTIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "histogram_quantile",
        "absent",
        "absent_over_time",
        "time",
        "timestamp",
        "vector",
        "scalar",
        "clamp",
        "clamp_min",
        "clamp_max",
        "abs",
        "ceil",
        "floor",
        "round",
        "sqrt",
        "exp",
        "ln",
        "changes",
        "resets",
        "label_replace",
        "label_join",
        "sort",
        "sort_desc",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "quantile_over_time",
        "predict_linear",
    }
)
PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_GRAFANA_INTERVAL = re.compile(r"\$__\w+|\$\{__\w+\}")


@dataclass(frozen=True)
class Parsed:
    series: frozenset[str]
    labels: frozenset[str]
    functions: frozenset[str]
    unknown: frozenset[str]  # identifiers that are neither series nor keywords


def parse_promql(expr: str) -> Parsed:
    """The series names, label names and functions a PromQL expression refers to.

    Not a full parser: enough to find every name in the expressions of deploy/, which
    promtool parses for real (rules directly, the dashboard's through a generated rule file).
    """
    text = _STRING.sub('""', expr)
    labels: set[str] = set()
    for block in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(block))
    text = _MATCHERS.sub(" ", text)
    for group in _GROUPING.findall(text):
        labels.update(name.strip() for name in group.split(",") if name.strip())
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    series: set[str] = set()
    functions: set[str] = set()
    unknown: set[str] = set()
    for name, call in _IDENTIFIER.findall(text):
        if call:
            (functions if name in PROMQL_FUNCTIONS else unknown).add(name)
        elif name.lower() in PROMQL_KEYWORDS:
            continue
        elif name in SERIES:
            series.add(name)
        else:
            unknown.add(name)
    return Parsed(frozenset(series), frozenset(labels), frozenset(functions), frozenset(unknown))


def _expr_problems(expr: str) -> list[str]:
    """Why an expression does not fit the exported metrics; empty when it does."""
    problems: list[str] = []
    stripped = _STRING.sub('""', expr)
    for opening, closing in ("()", "[]", "{}"):
        depth = 0
        for char in stripped:
            depth += (char == opening) - (char == closing)
            if depth < 0:
                break
        if depth != 0:
            problems.append(f"unbalanced {opening}{closing}")
    parsed = parse_promql(expr)
    if parsed.unknown:
        problems.append(f"unknown names {sorted(parsed.unknown)}")
    if not parsed.series:
        problems.append("uses no phasestream metric")
    allowed = frozenset().union(*(SERIES[name] for name in parsed.series))
    if parsed.labels - allowed:
        problems.append(f"labels {sorted(parsed.labels - allowed)} not on {sorted(parsed.series)}")
    return problems


def _metric_of(series: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        base = series.removesuffix(suffix)
        if base != series and base in METRICS and METRICS[base].kind == "histogram":
            return base
    return series


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip(PROMTOOL_MISSING)
    return found


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    found = _yaml(COMPOSE_FILE)["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    groups = _yaml(ALERTS_YML)["groups"]
    found = [rule for group in groups for rule in group["rules"]]
    assert found, "alerts.yml has no rules"
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels") or [])
    return found


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every query target of every panel."""
    return [
        (f"panel {panel['id']} {panel.get('title')!r} {target.get('refId')}", target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets") or []
    ]


# --- the expression checker itself ----------------------------------------------------------


def test_parse_promql_finds_names_and_labels() -> None:
    parsed = parse_promql(
        "histogram_quantile(0.99, sum by (consumer, le) (rate("
        'phasestream_consumer_batch_duration_seconds_bucket{consumer=~"a|b", job!="x"}'
        "[$__rate_interval]))) > 1e3 and on (consumer) up offset 5m"
    )
    assert parsed.series == {"phasestream_consumer_batch_duration_seconds_bucket", "up"}
    assert parsed.labels == {"consumer", "le", "job"}
    assert parsed.functions == {"histogram_quantile", "sum", "rate"}
    assert not parsed.unknown


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(workflow_phase_started[5m])", "unknown names ['workflow_phase_started']"),
        ("workflow_phase_completed_duration_seconds", "unknown names"),  # a histogram: no suffix
        ("workflow_phase_in_flight_bucket", "unknown names"),  # a gauge has no buckets
        ("sum by (consumer) (workflow_phase_in_flight)", "labels ['consumer'] not on"),
        ("rate(workflow_phase_started_total[5m]", "unbalanced ()"),
        ("frobnicate(workflow_phase_started_total)", "unknown names ['frobnicate']"),
        ("vector(1)", "uses no phasestream metric"),
    ],
)
def test_expression_checker_rejects(expr: str, problem: str) -> None:
    assert any(problem in found for found in _expr_problems(expr)), _expr_problems(expr)


def test_every_metric_is_typed_once() -> None:
    for name, metric in METRICS.items():
        assert name.startswith(("workflow_phase_", "phasestream_")), name
        assert name.endswith("_total") == (metric.kind == "counter"), name
        assert metric.labels <= {"phase", "kind", "state", "consumer", "partition"}, name


# --- Prometheus -----------------------------------------------------------------------------


def test_prometheus_config_is_valid(promtool: str) -> None:
    result = _run(promtool, "check", "config", PROMETHEUS_YML)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "alerts.yml" in output, f"the rule files were not checked: {output}"


def test_alert_rules_are_valid(promtool: str) -> None:
    result = _run(promtool, "check", "rules", ALERTS_YML)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    result = _run(promtool, "test", "rules", ALERTS_TEST_YML)
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_prometheus_dir(tmp_path: Path) -> Path:
    for source in (PROMETHEUS_YML, ALERTS_YML, ALERTS_TEST_YML):
        shutil.copy(source, tmp_path / source.name)
    return tmp_path


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_promtool_rejects_a_broken_config(promtool: str, tmp_path: Path) -> None:
    directory = _copy_prometheus_dir(tmp_path)
    _replace(directory / PROMETHEUS_YML.name, "scrape_interval: 15s", "scrape_interval: often")
    result = _run(promtool, "check", "config", directory / PROMETHEUS_YML.name)
    assert result.returncode != 0, result.stdout


def test_promtool_check_config_rejects_a_broken_rule_file(promtool: str, tmp_path: Path) -> None:
    directory = _copy_prometheus_dir(tmp_path)
    _replace(directory / ALERTS_YML.name, "expr: up{job=", "expr: up{{job=")
    assert _run(promtool, "check", "config", directory / PROMETHEUS_YML.name).returncode != 0
    assert _run(promtool, "check", "rules", directory / ALERTS_YML.name).returncode != 0


def test_promtool_unit_tests_catch_a_changed_threshold(promtool: str, tmp_path: Path) -> None:
    directory = _copy_prometheus_dir(tmp_path)
    _replace(directory / ALERTS_YML.name, "> 10000", "> 30000")
    result = _run(promtool, "test", "rules", directory / ALERTS_TEST_YML.name)
    assert result.returncode != 0, result.stdout
    assert "PhasestreamConsumerLagHigh" in result.stdout + result.stderr


def test_scrape_targets_are_the_consumer_services(promtool: str, services: dict[str, Any]) -> None:
    config = _yaml(PROMETHEUS_YML)
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "phasestream" in jobs
    # Static targets are there at once; without a short timeout promtool waits 30 s for more.
    result = _run(
        promtool, "check", "service-discovery", "--timeout=2s", PROMETHEUS_YML, "phasestream"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    targets = json.loads(result.stdout[result.stdout.index("[") :])
    port = {
        str(services[name]["environment"]["PHASESTREAM_HTTP_PORT"]) for name in CONSUMER_SERVICES
    }
    assert len(port) == 1, f"the consumers serve HTTP on different ports: {port}"
    found = {}
    for target in targets:
        labels = target["labels"]
        host, _, target_port = labels["__address__"].rpartition(":")
        assert target_port in port, labels
        # The instance is named by its service, not host:port.
        assert labels["instance"] == labels["service"] == host, labels
        found[host] = labels
    assert set(found) == set(CONSUMER_SERVICES)
    assert set(found) <= set(services)


def test_alerts_go_to_the_alertmanager_service(services: dict[str, Any]) -> None:
    config = _yaml(PROMETHEUS_YML)
    targets = [
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in services
    assert config["rule_files"] == [ALERTS_YML.name]


def test_alerts_are_well_formed(rules: list[dict[str, Any]]) -> None:
    names = [rule.get("alert") for rule in rules]
    assert all(names), "alerts.yml has recording rules or unnamed alerts"
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for:`"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        for key in ("summary", "description"):
            assert str(rule.get("annotations", {}).get(key, "")).strip(), f"{name}: no {key}"


def test_the_required_alerts_exist(rules: list[dict[str, Any]]) -> None:
    uses = {rule["alert"]: parse_promql(rule["expr"]).series for rule in rules}
    required = {
        "workflow_phase_sla_violations_total",
        "workflow_phase_failed_duration_seconds_count",
        "workflow_phase_completed_duration_seconds_count",
        "workflow_phase_rolled_back_total",
        "phasestream_consumer_lag_records",
        "phasestream_consumer_last_applied_timestamp_seconds",
        "up",
    }
    assert required <= set().union(*uses.values())
    exprs = " ".join(str(rule["expr"]) for rule in rules)
    assert 'up{job="phasestream"} == 0' in exprs
    assert 'absent(up{job="phasestream"})' in exprs


@pytest.mark.parametrize("source", ["alerts.yml", "dashboard"])
def test_only_exported_metrics_are_used(
    source: str, rules: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    exprs = (
        [(str(rule["alert"]), str(rule["expr"])) for rule in rules]
        if source == "alerts.yml"
        else _dashboard_exprs(dashboard)
    )
    assert exprs
    problems = {where: found for where, expr in exprs if (found := _expr_problems(expr))}
    assert not problems, problems


def test_every_alert_is_unit_tested(rules: list[dict[str, Any]]) -> None:
    cases = [
        (check["alertname"], check.get("exp_alerts") or [])
        for test in _yaml(ALERTS_TEST_YML)["tests"]
        for check in test.get("alert_rule_test") or []
    ]
    for rule in rules:
        name = rule["alert"]
        firing = [alerts for alert, alerts in cases if alert == name and alerts]
        assert firing, f"{name}: no test case where it fires"
        assert any(not alerts for alert, alerts in cases if alert == name), (
            f"{name}: no test case where it does not fire"
        )
        for alerts in firing:
            for alert in alerts:
                assert alert["exp_labels"]["severity"] == rule["labels"]["severity"], name
                assert set(alert["exp_annotations"]) >= {"summary", "description"}, name


# --- Alertmanager ---------------------------------------------------------------------------

_AM_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*')


def _route_matches(route: dict[str, Any], labels: dict[str, str]) -> bool:
    for matcher in route.get("matchers") or []:
        found = _AM_MATCHER.fullmatch(matcher)
        assert found, f"malformed matcher {matcher!r}"
        name, op, value = found.groups()
        actual = labels.get(name, "")
        hit = re.fullmatch(value, actual) is not None if "~" in op else actual == value
        if hit == op.startswith("!"):
            return False
    return True


def _receiver_for(route: dict[str, Any], labels: dict[str, str]) -> str:
    """The receiver Alertmanager picks: the first matching child route, depth first."""
    for child in route.get("routes") or []:
        if _route_matches(child, labels):
            return _receiver_for({"receiver": route["receiver"], **child}, labels)
    receiver = route["receiver"]
    assert isinstance(receiver, str)
    return receiver


def _alertmanager_problems(config: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    receivers = [receiver.get("name") for receiver in config.get("receivers") or []]
    if len(receivers) != len(set(receivers)):
        problems.append(f"duplicate receivers {receivers}")
    route = config.get("route")
    if not isinstance(route, dict) or not route.get("receiver"):
        return [*problems, "no top-level route with a receiver"]
    pending = [route]
    while pending:
        node = pending.pop()
        if "receiver" in node and node["receiver"] not in receivers:
            problems.append(f"route to undefined receiver {node['receiver']!r}")
        for matcher in node.get("matchers") or []:
            if not _AM_MATCHER.fullmatch(matcher):
                problems.append(f"malformed matcher {matcher!r}")
        pending.extend(node.get("routes") or [])
    return problems


def test_alertmanager_config_is_valid() -> None:
    assert not _alertmanager_problems(_yaml(ALERTMANAGER_YML))
    amtool = shutil.which("amtool")
    if amtool:  # the real parser where it is installed (Debian: prometheus-alertmanager)
        result = _run(amtool, "check-config", ALERTMANAGER_YML)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_alertmanager_config_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / ALERTMANAGER_YML.name
    shutil.copy(ALERTMANAGER_YML, broken)
    _replace(broken, "- receiver: critical", "- receiver: pager")
    assert any("pager" in problem for problem in _alertmanager_problems(_yaml(broken)))
    amtool = shutil.which("amtool")
    if amtool:
        assert _run(amtool, "check-config", broken).returncode != 0


@pytest.mark.parametrize("severity", SEVERITIES)
def test_every_severity_is_routed(severity: str, rules: list[dict[str, Any]]) -> None:
    config = _yaml(ALERTMANAGER_YML)
    assert severity in {rule["labels"]["severity"] for rule in rules}
    receiver = _receiver_for(config["route"], {"severity": severity})
    assert receiver == severity, f"severity={severity} goes to {receiver}"
    amtool = shutil.which("amtool")
    if amtool:
        result = _run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_YML}",
            f"severity={severity}",
        )
        assert result.stdout.split() == [severity], result.stdout + result.stderr


def test_inhibited_alerts_exist(rules: list[dict[str, Any]]) -> None:
    names = {rule["alert"] for rule in rules}
    for inhibit in _yaml(ALERTMANAGER_YML).get("inhibit_rules") or []:
        for key in ("source_matchers", "target_matchers"):
            for matcher in inhibit[key]:
                found = _AM_MATCHER.fullmatch(matcher)
                assert found, matcher
                if found.group(1) == "alertname":
                    assert found.group(3) in names, f"{key}: no alert {found.group(3)}"


# --- Grafana --------------------------------------------------------------------------------


def test_grafana_datasource_is_the_prometheus_service(services: dict[str, Any]) -> None:
    sources = _yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    prometheus = [source for source in sources if source.get("uid") == "prometheus"]
    assert len(prometheus) == 1, sources
    source = prometheus[0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    url = urlsplit(source["url"])
    assert url.hostname in services
    assert any(str(port).endswith(f":{url.port}") for port in services["prometheus"]["ports"])


def test_grafana_loads_the_dashboard_directory() -> None:
    providers = _yaml(GRAFANA_PROVISIONING / "dashboards" / "phasestream.yml")["providers"]
    assert [provider["type"] for provider in providers] == ["file"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "phasestream"
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 39
    assert dashboard.get("id") is None, "a provisioned dashboard must not carry a database id"
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"


def test_every_panel_queries_prometheus(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("gridPos"), where
        assert panel.get("datasource", {}).get("uid") == "prometheus", where
        targets = panel.get("targets") or []
        assert targets, f"{where}: no targets"
        for target in targets:
            assert target.get("datasource", {}).get("uid") == "prometheus", where
            assert str(target.get("expr", "")).strip(), where


def test_dashboard_shows_every_metric(dashboard: dict[str, Any]) -> None:
    used = set().union(*(parse_promql(expr).series for _, expr in _dashboard_exprs(dashboard)))
    missing = set(METRICS) - {_metric_of(series) for series in used}
    assert not missing, f"not on the dashboard: {sorted(missing)}"


def test_duration_panel_shows_quantiles_against_the_sla(dashboard: dict[str, Any]) -> None:
    histogram = "workflow_phase_completed_duration_seconds_bucket"
    panels = [
        panel
        for panel in _panels(dashboard)
        if any(histogram in target["expr"] for target in panel.get("targets") or [])
    ]
    assert panels, f"no panel shows {histogram}"
    exprs = [target["expr"] for target in panels[0]["targets"]]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            expr.startswith(f"histogram_quantile({quantile}, ") and histogram in expr
            for expr in exprs
        ), f"no p{quantile} of {histogram}"
    assert any("workflow_phase_sla_threshold_seconds" in expr for expr in exprs), "no SLA line"
    everything = " ".join(expr for _, expr in _dashboard_exprs(dashboard))
    assert "histogram_quantile(0.95, sum by (le) (rate(workflow_phase_failed_duration" in everything
    assert "sum by (phase, kind) (rate(workflow_phase_sla_violations_total" in everything


def test_dashboard_variables_are_known(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    for name, variable in variables.items():
        assert variable["datasource"]["uid"] == "prometheus", name
        query = (
            variable["query"]["query"]
            if isinstance(variable["query"], dict)
            else (variable["query"])
        )
        found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert found, f"${name}: {query}"
        selector, label = found.groups()
        assert not _expr_problems(selector), (name, _expr_problems(selector))
        series = parse_promql(selector).series
        assert all(label in SERIES[one] for one in series), f"${name}: no label {label}"
    text = json.dumps(dashboard["panels"])
    used = set(re.findall(r"\$(?!__)(\w+)", text))
    assert used <= set(variables), f"undefined variables: {used - set(variables)}"


def test_dashboard_queries_parse(promtool: str, dashboard: dict[str, Any], tmp_path: Path) -> None:
    # promtool parses PromQL in rule files: make one recording rule per dashboard query,
    # with Grafana's interval variables replaced by a duration.
    queries = _dashboard_exprs(dashboard)
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {
                                "record": f"dashboard:query_{index}",
                                "expr": _GRAFANA_INTERVAL.sub("5m", expr),
                            }
                            for index, (_, expr) in enumerate(queries)
                        ],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    result = _run(promtool, "check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout

    broken = tmp_path / "broken_rules.yml"
    broken.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": "dashboard:broken", "expr": "sum by (phase) (rate(x[5m])"}
                        ],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    assert _run(promtool, "check", "rules", broken).returncode != 0
