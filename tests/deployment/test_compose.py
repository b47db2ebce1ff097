"""docker-compose.yml: valid against the Compose Specification and consistent with the code.

No Docker engine is needed: the file is checked with the real ``check-jsonschema`` CLI against
its vendored compose-spec schema, then read as YAML and compared with ``Settings``, the
``phasestream`` CLI, the Dockerfile, the Kafka / Postgres service definitions and the
monitoring services' files under deploy/ (whose contents tests/deployment/test_deploy.py checks).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import typer.main
import yaml
from typer.core import TyperGroup
from typer.testing import CliRunner

from phasestream.cli import app
from phasestream.local_kafka import (
    BROKER_LISTENER,
    CONTROLLER_LISTENER,
    KafkaNode,
    broker_properties,
    kafka_version,
)
from phasestream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
INITDB = "/docker-entrypoint-initdb.d"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PREFIX = "PHASESTREAM_"
PHASESTREAM_SERVICES = ("migrate", "topics", "audit", "sla", "metrics", "rollback", "notify")
ONE_SHOT = ("migrate", "topics")
# The long-running consumers: each serves /metrics and /healthz on PHASESTREAM_HTTP_PORT.
CONSUMERS = ("audit", "sla", "metrics", "rollback", "notify")
HTTP_PORT = 6066
MONITORING = ("prometheus", "alertmanager", "grafana")
# Kafka broker defaults for the settings a client must stay within.
KAFKA_DEFAULTS = {
    "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": 6000,
    "KAFKA_GROUP_MAX_SESSION_TIMEOUT_MS": 1_800_000,
    "KAFKA_MESSAGE_MAX_BYTES": 1_048_588,
}

Service = dict[str, Any]


# --- helpers --------------------------------------------------------------------------------


def _check_jsonschema() -> list[str]:
    """The check-jsonschema CLI of the running interpreter's environment."""
    found = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "check_jsonschema"]


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


#: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error} (Compose spec).
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _example_values() -> dict[str, str]:
    """The variables .env.example documents, each given a stand-in value."""
    names = [
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    ]
    # 40 characters or more: as long as the secrets must be (a JWT secret needs 32 bytes).
    return {name: f"test-{name.lower().replace('_', '-')}".ljust(40, "x") for name in names}


def _interpolate(text: str, values: dict[str, str]) -> str:
    """What Compose makes of the file with ``values`` as its environment."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        value = values.get(name)
        unset = value is None or (op.startswith(":") and not value)
        if unset and op.endswith("?"):
            raise AssertionError(f"required variable {name} is unset: {arg}")
        if unset and op.endswith("-"):
            return arg
        return value or ""

    return VARIABLE.sub(one, text)


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return _load()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as Compose runs it, with the variables of .env.example set."""
    text = _interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), _example_values())
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose.get("services")
    assert isinstance(found, dict), "no services"
    return found


def _env(service: Service) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two Compose forms it uses."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.split("=", 1) for item in raw]
        return {pair[0]: pair[1] if len(pair) == 2 else "" for pair in pairs}
    return {key: "" if value is None else _scalar(value) for key, value in raw.items()}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _depends_on(service: Service) -> dict[str, str]:
    """Dependency name -> condition (the short list form means service_started)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def _command(service: Service) -> list[str]:
    raw = service.get("command")
    assert raw, "no command"
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}."""
    result: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


def _published(service: Service) -> dict[int, int]:
    """Container port -> host port, from the short ("H:C") or long port syntax."""
    result: dict[int, int] = {}
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            result[int(port["target"])] = int(port["published"])
            continue
        parts = str(port).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {port} is not published on a fixed host port"
        result[int(parts[-1])] = int(parts[-2])
    return result


def _mounts(service: Service) -> dict[str, str]:
    """Container path -> source (a volume name or a host path), from either volume syntax."""
    result: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            result[str(volume["target"])] = str(volume.get("source", ""))
            continue
        source, _, rest = str(volume).partition(":")
        result[rest.split(":")[0]] = source
    return result


def _bind_source(source: str) -> Path | None:
    """The host path of a bind mount, None for a named volume."""
    return ROOT / source if source.startswith((".", "/")) else None


def _flags(service: Service) -> dict[str, list[str]]:
    """A service's `--name=value` command flags: name -> values (a bare flag has "")."""
    result: dict[str, list[str]] = {}
    for part in _command(service):
        name, _, value = part.partition("=")
        result.setdefault(name, []).append(value)
    return result


def _mounted_file(service: Service, container_path: str) -> Path:
    """The repository file bind-mounted at container_path (itself or through a directory)."""
    mounts = _mounts(service)
    for target, source in mounts.items():
        host = _bind_source(source)
        if host is None:
            continue
        if container_path == target:
            return host
        if container_path.startswith(target.rstrip("/") + "/"):
            return host / container_path[len(target.rstrip("/")) + 1 :]
    raise AssertionError(f"{container_path} is not bind-mounted: {mounts}")


def _compose_settings(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    """Settings exactly as a container with this environment would read them."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    return Settings()


def _kafka_setting(kafka_env: dict[str, str], name: str) -> int:
    return int(kafka_env.get(name, KAFKA_DEFAULTS[name]))


# --- the schema ------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    result = _validate(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("breakage", ["ports-not-a-list", "unknown-top-level-key"])
def test_schema_check_rejects_a_broken_copy(breakage: str, tmp_path: Path) -> None:
    data = _load()
    if breakage == "ports-not-a-list":
        data["services"]["postgres"]["ports"] = "not-a-list"
    else:
        data["databases"] = {"main": {}}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    intact = tmp_path / "intact.yml"
    intact.write_text(yaml.safe_dump(_load()), encoding="utf-8")

    assert _validate(intact).returncode == 0  # the round trip alone does not break it
    result = _validate(broken)
    assert result.returncode != 0, f"{breakage} was accepted:\n{result.stdout}"


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


# --- services and their wiring ---------------------------------------------------------------


def test_expected_services_exist(services: dict[str, Service]) -> None:
    assert {"kafka", "postgres", *PHASESTREAM_SERVICES} <= set(services)


def test_phasestream_services_share_the_extension(
    compose: dict[str, Any], services: dict[str, Service]
) -> None:
    shared = compose.get("x-phasestream")
    assert isinstance(shared, dict), "x-phasestream extension missing"
    for name in PHASESTREAM_SERVICES:
        service = services[name]
        assert service.get("build") == shared["build"], name
        assert _env(service) == _env(shared), name
        # Several services building one shared tag collide under `buildx bake`.
        assert "image" not in service, f"{name}: a shared image tag races under bake"


def test_every_phasestream_variable_is_a_setting(services: dict[str, Service]) -> None:
    fields = set(Settings.model_fields)
    used = {
        key
        for service in services.values()
        for key in _env(service)
        if key.upper().startswith(PREFIX)
    }
    assert used, "no PHASESTREAM_ variable is set anywhere"
    unknown = {key for key in used if key[len(PREFIX) :].lower() not in fields}
    assert not unknown, f"not fields of Settings: {sorted(unknown)}"


def test_bootstrap_servers_match_an_advertised_listener(services: dict[str, Service]) -> None:
    kafka_env = _env(services["kafka"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    bound = _listeners(kafka_env["KAFKA_LISTENERS"])
    kafka_names = {"kafka", services["kafka"].get("hostname", "kafka")}
    for name in PHASESTREAM_SERVICES:
        servers = _env(services[name])["PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS"]
        for server in servers.split(","):
            host, _, port = server.strip().rpartition(":")
            matches = [
                listener
                for listener, (a_host, a_port) in advertised.items()
                if (a_host, a_port) == (host, int(port))
            ]
            assert matches, f"{name}: {server} is not advertised by kafka: {advertised}"
            assert host in kafka_names, f"{name}: {host} is not the kafka service"
            assert bound[matches[0]][1] == int(port), f"{server}: the broker does not bind it"


def test_host_listener_is_published_on_the_same_port(services: dict[str, Service]) -> None:
    kafka_env = _env(services["kafka"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    bound = _listeners(kafka_env["KAFKA_LISTENERS"])
    published = _published(services["kafka"])
    host_side = {name: port for name, (host, port) in advertised.items() if host == "localhost"}
    assert host_side == {"HOST": 29092}, advertised
    for name, port in host_side.items():
        # The client on the host is told localhost:P, so P must be published as P.
        assert published.get(bound[name][1]) == port, f"{name} not published as {port}"
    controller = kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in bound
    assert controller not in advertised
    voters = kafka_env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters == f"{kafka_env['KAFKA_NODE_ID']}@kafka:{bound[controller][1]}"
    protocols = dict(
        item.split(":") for item in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(bound) <= set(protocols)


def test_kafka_is_a_single_kraft_node(services: dict[str, Service]) -> None:
    kafka = services["kafka"]
    env = _env(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["image"].split(":")[1].split(".")[0] in {"3", "4"}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    assert "ZOOKEEPER" not in " ".join(env)
    data_dir = env["KAFKA_LOG_DIRS"]
    assert any(str(volume).endswith(f":{data_dir}") for volume in kafka["volumes"]), (
        "the broker's log dir is not on a volume"
    )


def test_the_compose_kafka_is_the_one_the_tests_run(services: dict[str, Service]) -> None:
    """Same version and the same KRaft set-up as phasestream/local_kafka.py's broker."""
    kafka = services["kafka"]
    env = _env(kafka)
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"
    node = KafkaNode(1, Path("/unused"), {BROKER_LISTENER: 1, CONTROLLER_LISTENER: 2})
    tested = dict(
        line.split("=", 1) for line in broker_properties(node, [node], {}, {}).splitlines()
    )
    for name in (
        "process.roles",
        "controller.listener.names",
        "auto.create.topics.enable",
        "group.initial.rebalance.delay.ms",
        "offsets.topic.replication.factor",
    ):
        assert env[f"KAFKA_{name.upper().replace('.', '_')}"] == tested[name], name
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(protocols.values()) == {"PLAINTEXT"}  # as the tests' (SASL_SSL: its own test)


def test_database_url_matches_the_postgres_service(services: dict[str, Service]) -> None:
    pg_env = _env(services["postgres"])
    container_ports = set(_published(services["postgres"]))
    assert _published(services["postgres"]) == {5432: 5433}
    for name in PHASESTREAM_SERVICES:
        url = urlsplit(_env(services[name])["PHASESTREAM_DATABASE_URL"])
        assert url.scheme in {"postgresql", "postgres"}, name
        assert url.hostname == "postgres", f"{name}: {url.hostname} is not the service"
        assert url.port in container_ports, f"{name}: port {url.port}"
        # The application role the init script creates, not the superuser.
        assert url.username == pg_env["APP_DB_USER"] != pg_env["POSTGRES_USER"], name
        assert url.password == pg_env["APP_DB_PASSWORD"], name
        assert url.path.lstrip("/") == pg_env["POSTGRES_DB"], name


def test_commands_are_real_cli_commands(services: dict[str, Service]) -> None:
    root = typer.main.get_command(app)
    runner = CliRunner()
    for name in PHASESTREAM_SERVICES:
        command = _command(services[name])
        # Walk the groups down to a leaf command: `topics` alone would only print help.
        node = root
        ctx = typer.Context(root, info_name="phasestream")
        args = list(command)
        while isinstance(node, TyperGroup) and args and not args[0].startswith("-"):
            child = node.get_command(ctx, args[0])
            assert child is not None, f"{name}: no command {args[0]!r} in {command}"
            node = child
            ctx = typer.Context(node, info_name=args.pop(0), parent=ctx)
        assert isinstance(root, TyperGroup)  # the walk above really descends
        assert not isinstance(node, TyperGroup), f"{name}: {command} is a group, not a command"
        node.make_context(node.name or name, args, parent=ctx)  # its options parse

        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: {command}: {result.output}"
        assert " ".join(command[:2]) in result.output


def test_dependencies_gate_the_start_order(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                why = f"{name} waits for {target} to be healthy, which has no healthcheck"
                assert check.get("test"), why
                assert not check.get("disable"), why
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", (
                    f"{name} waits for {target} to complete, but it restarts"
                )
    assert _depends_on(services["migrate"]) == {"postgres": "service_healthy"}
    assert _depends_on(services["topics"]) == {"kafka": "service_healthy"}
    for name in CONSUMERS:
        assert _depends_on(services[name]) == {
            "kafka": "service_healthy",
            "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
            "topics": "service_completed_successfully",
        }, name
    # Prometheus must not wait for the consumers: it is what reports them down.
    assert not set(_depends_on(services["prometheus"])) & set(PHASESTREAM_SERVICES)
    assert _depends_on(services["grafana"]) == {"prometheus": "service_healthy"}


def test_one_shot_and_long_running_services(services: dict[str, Service]) -> None:
    for name in ONE_SHOT:
        assert services[name].get("restart") == "no", name
    long_running = {
        name for name, service in services.items() if service.get("restart", "no") != "no"
    }
    assert long_running == {"kafka", "postgres", *CONSUMERS, *MONITORING}
    for name in long_running:
        service = services[name]
        healthy = [
            target
            for target, condition in _depends_on(service).items()
            if condition == "service_healthy"
        ]
        assert service.get("healthcheck") or healthy, f"{name}: no health gate at all"


def test_healthchecks_probe_the_right_thing(services: dict[str, Service]) -> None:
    kafka_env = _env(services["kafka"])
    internal_port = _listeners(kafka_env["KAFKA_LISTENERS"])["INTERNAL"][1]
    kafka_test = " ".join(services["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka_test
    assert f"--bootstrap-server localhost:{internal_port}" in kafka_test
    pg_env = _env(services["postgres"])
    pg_test = " ".join(services["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in pg_test
    assert f"-U {pg_env['POSTGRES_USER']}" in pg_test
    assert f"-d {pg_env['POSTGRES_DB']}" in pg_test


@pytest.mark.parametrize("name", CONSUMERS)
def test_consumers_can_be_scaled(name: str, services: dict[str, Service]) -> None:
    service = services[name]
    # A fixed container name or host port would make `--scale NAME=N` fail.
    assert "container_name" not in service
    assert not service.get("ports")


# --- the consumers' HTTP server ---------------------------------------------------------------


@pytest.mark.parametrize("name", CONSUMERS)
def test_consumers_serve_http_inside_the_stack(name: str, services: dict[str, Service]) -> None:
    service = services[name]
    port = int(_env(service)["PHASESTREAM_HTTP_PORT"])
    assert port == HTTP_PORT
    assert [int(str(exposed).split("/")[0]) for exposed in service.get("expose") or []] == [port]
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    assert f"http://127.0.0.1:{port}/healthz" in test[3]
    assert "urllib" in test[3]


@contextmanager
def _healthz(status: int) -> Iterator[int]:
    """A stand-in /healthz answering `status` on 127.0.0.1; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_consumer_healthcheck_follows_healthz(
    status: int, healthy: bool, services: dict[str, Service]
) -> None:
    """The healthcheck's own Python, pointed at a stand-in /healthz: 503 is unhealthy."""
    code = services["audit"]["healthcheck"]["test"][3]
    assert f"127.0.0.1:{HTTP_PORT}/" in code
    with _healthz(status) as port:
        probe = code.replace(f"127.0.0.1:{HTTP_PORT}/", f"127.0.0.1:{port}/")
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
    assert (result.returncode == 0) is healthy, result.stderr


# --- monitoring ------------------------------------------------------------------------------


def test_monitoring_images_are_pinned(services: dict[str, Service]) -> None:
    images = {name: str(services[name]["image"]) for name in MONITORING}
    assert images["prometheus"].startswith("prom/prometheus:v3."), images
    assert images["alertmanager"].startswith("prom/alertmanager:v0."), images
    assert images["grafana"].startswith("grafana/grafana:"), images
    for image in images.values():
        assert image.split(":")[1] not in {"", "latest", "main"}, image


@pytest.mark.parametrize(
    ("name", "port"), [("prometheus", 9090), ("alertmanager", 9093), ("grafana", 3000)]
)
def test_monitoring_ports(name: str, port: int, services: dict[str, Service]) -> None:
    assert _published(services[name]) == {port: port}


def test_bind_mounts_exist(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for target, source in _mounts(service).items():
            host = _bind_source(source)
            assert host is None or host.exists(), f"{name}: {source} (for {target}) is missing"


def test_prometheus_runs_the_repository_config(services: dict[str, Service]) -> None:
    prometheus = services["prometheus"]
    flags = _flags(prometheus)
    features = {
        feature for value in flags.get("--enable-feature", []) for feature in value.split(",")
    }
    assert "exemplar-storage" in features, flags
    (config_path,) = flags["--config.file"]
    config_file = _mounted_file(prometheus, config_path)
    assert config_file.resolve() == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    # Every rule file resolves, in the container, to the file next to the config on the host.
    config = _load(config_file)
    assert config["rule_files"]
    container_dir = Path(config_path).parent
    for rule_file in config["rule_files"]:
        mounted = _mounted_file(prometheus, str(container_dir / rule_file))
        assert mounted.resolve() == (config_file.parent / rule_file).resolve(), rule_file
        assert mounted.is_file(), mounted
    (storage,) = flags["--storage.tsdb.path"]
    assert _bind_source(_mounts(prometheus)[storage]) is None, "the TSDB is not on a volume"


def test_alertmanager_runs_the_repository_config(services: dict[str, Service]) -> None:
    alertmanager = services["alertmanager"]
    flags = _flags(alertmanager)
    (config_path,) = flags["--config.file"]
    config_file = _mounted_file(alertmanager, config_path)
    assert config_file.resolve() == ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    assert config_file.is_file()
    (storage,) = flags["--storage.path"]
    assert _bind_source(_mounts(alertmanager)[storage]) is None


def test_grafana_is_provisioned_from_the_repository(services: dict[str, Service]) -> None:
    grafana = services["grafana"]
    provisioning = _mounted_file(grafana, "/etc/grafana/provisioning")
    assert provisioning.resolve() == ROOT / "deploy" / "grafana" / "provisioning"
    sources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.yml"))
        for source in _load(path)["datasources"]
    ]
    assert "prometheus" in {source.get("uid") for source in sources}
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.yml"))
        for provider in _load(path)["providers"]
    ]
    assert providers
    for provider in providers:
        dashboards = _mounted_file(grafana, provider["options"]["path"])
        assert sorted(dashboards.glob("*.json")), f"no dashboards in {dashboards}"
    env = _env(grafana)
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert _mounted_file(grafana, home).is_file(), home
    assert env.get("GF_SECURITY_ADMIN_PASSWORD"), "no way in"


# --- safe by default -------------------------------------------------------------------------


def test_every_published_port_is_bound_to_loopback(raw_compose: dict[str, Any]) -> None:
    for name, service in raw_compose["services"].items():
        for port in service.get("ports") or []:
            host_ip = (
                port.get("host_ip")
                if isinstance(port, dict)
                else str(port).rsplit(":", 2)[0]
                if str(port).count(":") == 2
                else None
            )
            assert host_ip == "127.0.0.1", f"{name}: {port} is published on every interface"


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
#: A whole value that Compose refuses to start without: ${NAME:?why}.
REQUIRED = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}")


def test_every_password_comes_from_the_environment(raw_compose: dict[str, Any]) -> None:
    blocks = {**raw_compose["services"], "x-phasestream": raw_compose["x-phasestream"]}
    for name, service in blocks.items():
        for key, value in _env(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED.fullmatch(value), f"{name}: {key} is not ${{VAR:?...}}"
            url = urlsplit(value) if "://" in value else None
            if url is not None and "@" in url.netloc:
                userinfo = url.netloc.rsplit("@", 1)[0]
                assert ":" in userinfo, f"{name}: {key} has no password"
                assert REQUIRED.fullmatch(userinfo.split(":", 1)[1]), (
                    f"{name}: {key} carries a password that is not ${{VAR:?...}}"
                )


def test_required_variables_are_documented_and_left_empty() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    required = {m["name"] for m in VARIABLE.finditer(text) if (m["op"] or "").endswith("?")}
    assert required, "no required variables"
    assert required == set(_example_values()), ".env.example and docker-compose.yml differ"
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert line.split("=", 1)[1].strip() == "", f"a value in .env.example: {line}"
    with pytest.raises(AssertionError, match="required variable"):
        _interpolate(text, {})  # unset, Compose refuses to start
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore, "a .env with passwords could be committed"


def test_no_service_enables_an_anonymous_admin_api(services: dict[str, Service]) -> None:
    for name, service in services.items():
        command = service.get("command") or []
        assert not any("--web.enable-lifecycle" in str(part) for part in command), name
    grafana = _env(services["grafana"])
    assert grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false") == "false", "anonymous Grafana"


def test_the_postgres_application_role_is_made_by_the_init_script(
    services: dict[str, Service],
) -> None:
    postgres = services["postgres"]
    scripts = _mounted_file(postgres, INITDB)
    (script,) = sorted(scripts.glob("*.sh"))
    text = script.read_text()
    assert "NOSUPERUSER" in text
    for variable in ("APP_DB_USER", "APP_DB_PASSWORD", "POSTGRES_USER", "POSTGRES_DB"):
        assert f"${variable}" in text or f"${{{variable}" in text, variable
        assert _env(postgres).get(variable), f"postgres sets no {variable}"


# --- idempotent producers on Apache Kafka ----------------------------------------------------

IDEMPOTENT = f"{PREFIX}KAFKA_IDEMPOTENT_PRODUCER"
BOOTSTRAP = f"{PREFIX}KAFKA_BOOTSTRAP_SERVERS"
#: A manifest line that turns idempotent producers on (an env entry, YAML or KEY=value).
IDEMPOTENT_ON = re.compile(rf"{IDEMPOTENT}\W+[\"']?true\b", re.IGNORECASE)


def _bootstrap_hosts(service: Service) -> set[str]:
    servers = _env(service).get(BOOTSTRAP, "")
    return {
        urlsplit(f"//{server.strip()}").hostname or ""
        for server in servers.split(",")
        if server.strip()
    }


def not_idempotent_on_apache_kafka(services: dict[str, Service]) -> list[str]:
    """Services whose bootstrap servers are an Apache Kafka of the file, without idempotent
    producers. Every such service is held to it, whether or not its command produces
    today (most do: dead letters, violations, commands, events): true costs a non-producer
    nothing, and a command that starts producing later is then already covered."""
    kafka = {
        name
        for name, service in services.items()
        if str(service.get("image", "")).startswith("apache/kafka:")
    }
    kafka |= {
        str(services[name].get("hostname")) for name in kafka if services[name].get("hostname")
    }
    return sorted(
        name
        for name, service in services.items()
        if _bootstrap_hosts(service) & kafka and _env(service).get(IDEMPOTENT, "").lower() != "true"
    )


def test_every_service_on_apache_kafka_produces_idempotently(services: dict[str, Service]) -> None:
    # docs/configuration.md: true on Apache Kafka, or a send retried across a leader
    # failover is written twice.
    on_kafka = [name for name in services if _bootstrap_hosts(services[name]) & {"kafka"}]
    assert set(on_kafka) >= set(PHASESTREAM_SERVICES), on_kafka
    assert not_idempotent_on_apache_kafka(services) == []


@pytest.mark.parametrize("value", [None, "false"])
def test_the_idempotence_check_finds_a_service_without_it(
    value: str | None, services: dict[str, Service]
) -> None:
    env = {k: v for k, v in _env(services["rollback"]).items() if k != IDEMPOTENT}
    if value is not None:
        env[IDEMPOTENT] = value
    # A new mapping: the services share one environment object (the YAML merge key).
    broken = {**services, "rollback": {**services["rollback"], "environment": env}}
    assert not_idempotent_on_apache_kafka(broken) == ["rollback"]
    elsewhere = {**env, BOOTSTRAP: "other-kafka:9092"}  # not this file's Apache Kafka
    assert (
        not_idempotent_on_apache_kafka(
            {**services, "rollback": {**services["rollback"], "environment": elsewhere}}
        )
        == []
    )


def deploy_files_without_idempotence(root: Path) -> list[str]:
    """Files under ``root`` that point a phasestream process at Kafka
    (PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS) without turning idempotent producers on."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8", errors="replace")
        if BOOTSTRAP in text and not IDEMPOTENT_ON.search(text):
            found.append(str(path.relative_to(root)))
    return found


def test_deploy_manifests_produce_idempotently(tmp_path: Path) -> None:
    deploy = ROOT / "deploy"
    assert any(deploy.rglob("*.yml")), "no manifests under deploy/"
    assert deploy_files_without_idempotence(deploy) == []
    (tmp_path / "on.yaml").write_text(f'env:\n  {BOOTSTRAP}: kafka:9092\n  {IDEMPOTENT}: "true"\n')
    (tmp_path / "off.yaml").write_text(f"env:\n  {BOOTSTRAP}: kafka:9092\n  {IDEMPOTENT}: false\n")
    (tmp_path / "missing.env").write_text(f"{BOOTSTRAP}=kafka:9092\n")
    assert deploy_files_without_idempotence(tmp_path) == ["missing.env", "off.yaml"]


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PHASESTREAM_SERVICES)
def test_settings_agree_with_the_stack(
    name: str, services: dict[str, Service], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _compose_settings(_env(services[name]), monkeypatch, tmp_path)
    kafka_env = _env(services["kafka"])

    # The containers use the stack's broker and database, never the embedded ones.
    assert not settings.uses_embedded_kafka
    assert not settings.uses_embedded_postgres
    assert settings.log_level in {"DEBUG", "INFO", "WARNING", "ERROR"}
    # Topics we create match the broker's defaults; one broker holds one replica.
    assert settings.topic_partitions == int(kafka_env["KAFKA_NUM_PARTITIONS"])
    assert settings.topic_replication_factor <= 1
    # The broker accepts the consumer's session timeout and the largest event.
    low = _kafka_setting(kafka_env, "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS")
    high = _kafka_setting(kafka_env, "KAFKA_GROUP_MAX_SESSION_TIMEOUT_MS")
    assert low <= settings.consumer_session_timeout_ms <= high
    assert (
        settings.consumer_session_timeout_ms
        >= Settings.model_fields["consumer_session_timeout_ms"].default
    )
    assert settings.batch_max_wait_ms < settings.consumer_session_timeout_ms
    assert settings.max_event_bytes <= _kafka_setting(kafka_env, "KAFKA_MESSAGE_MAX_BYTES")
    # Prometheus scrapes <service>:6066 and the healthcheck probes it.
    assert "http_port" in Settings.model_fields, "Settings has no http_port field"
    assert settings.model_dump()["http_port"] == HTTP_PORT
    # ... from another container: the server must not listen on loopback only.
    assert settings.model_dump().get("http_host") == "0.0.0.0", "serves on loopback only"


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_builds_the_cli_image(services: dict[str, Service]) -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    instructions = [line.split(None, 1) for line in lines if line.split()[0].isupper()]
    by_name: dict[str, list[str]] = {}
    for keyword, *rest in instructions:
        by_name.setdefault(keyword, []).append(rest[0] if rest else "")

    assert by_name["FROM"] == ["python:3.11-slim"]
    users = by_name.get("USER", [])
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert json.loads(by_name["ENTRYPOINT"][-1]) == ["phasestream"]
    assert "phasestream" in scripts
    for name in PHASESTREAM_SERVICES:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")) == DOCKERFILE


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "bench/out", "test-artifacts", ".env"} <= ignored
    assert not ignored & {"pyproject.toml", "phasestream", "migrations", "models"}
