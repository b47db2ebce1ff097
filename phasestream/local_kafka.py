"""Apache Kafka for the tests and the benchmarks: the broker's jars from Maven Central, KRaft
nodes on loopback (development only: it needs Maven and Java, and nothing in the product
imports it).

``start_kafka(directory, brokers=1)`` formats and starts ``brokers`` combined
broker+controller nodes (one static controller quorum of all of them) on free
127.0.0.1 ports, waits until every broker serves metadata, and stops the processes it
started at the end. The cluster it yields can kill -9, stop, start and restart any node
with its log kept (the ports stay the same), for the restart and failover tests.

Only what tests need differs from a production default: short group join delay and
session floor, internal topics replicated to as many brokers as there are, loopback
listeners. ``extra_props`` adds or overrides broker properties, ``listeners`` adds named
listeners (name -> security protocol) on their own free ports, and ``format_args`` goes
to ``kafka-storage format`` (e.g. ``--add-scram``), for the secured-cluster tests;
``java_options`` replaces the JVM's start-up tuning (benchmarks pass none).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "local_kafka.pom.xml"
HOST = "127.0.0.1"
#: The listener clients and the other brokers use; the controllers talk on CONTROLLER.
BROKER_LISTENER = "BROKER"
CONTROLLER_LISTENER = "CONTROLLER"
#: Per broker; the tests' brokers hold little data (measured RSS: see docs/development.md).
HEAP = os.environ.get("PHASESTREAM_TEST_KAFKA_HEAP", "512m")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0
STARTED_LINE = "Kafka Server started"
#: C1 only: half the CPU at start (measured, 3 nodes), which matters on a shared 2-core
#: machine; the tests' brokers never run long enough for C2 to pay off. Benchmarks pass ().
FAST_START = ("-XX:TieredStopAtLevel=1",)


class KafkaLaunchError(RuntimeError):
    """The broker could not be resolved, formatted or started; the message says why."""


def kafka_version() -> str:
    found = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not found:
        raise KafkaLaunchError(f"{POM} names no <kafka.version>")
    return found.group(1)


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "phasestream" / f"kafka-{kafka_version()}"


def resolve_jars() -> Path:
    """The directory of the broker's jars, resolved by Maven on first use (then cached,
    outside the repository; again whenever phasestream/local_kafka.pom.xml changes)."""
    libs = cache_dir() / "libs"
    stamp = cache_dir() / "resolved-pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and any(libs.glob("*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise KafkaLaunchError(
            "mvn is not installed: install Maven (Debian package maven) "
            "to fetch the Apache Kafka broker for the tests"
        )
    shutil.rmtree(libs, ignore_errors=True)
    done = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise KafkaLaunchError(
            f"mvn could not resolve Apache Kafka {kafka_version()} "
            f"({POM.name}): {(done.stdout + done.stderr)[-2000:]}"
        )
    stamp.write_text(digest)
    return libs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class KafkaNode:
    """One combined broker+controller: its ports and directory stay across restarts."""

    node_id: int
    directory: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None
    #: Where this start's lines begin in the log (the file is kept across restarts).
    log_offset: int = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.ports[BROKER_LISTENER]}"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.running else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class KafkaCluster:
    """Started KRaft nodes; every process here was started by this object."""

    directory: Path
    nodes: list[KafkaNode]
    jars: Path
    extra_props: Mapping[str, str] = field(default_factory=dict)
    listeners: Mapping[str, str] = field(default_factory=dict)
    java_options: Sequence[str] = FAST_START
    #: Seconds each start took (format excluded), for the report.
    start_seconds: list[float] = field(default_factory=list)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return next(node for node in self.nodes if node.node_id == node_id)

    def address_of(self, node_id: int, listener: str = BROKER_LISTENER) -> str:
        return f"{HOST}:{self.node(node_id).ports[listener]}"

    def start(self, *node_ids: int) -> None:
        """Start the given nodes (all when none are named) and wait until they serve."""
        chosen = [self.node(i) for i in node_ids] if node_ids else self.nodes
        began = time.monotonic()
        for node in chosen:
            self._launch(node)
        for node in chosen:
            _wait_started(node, began + START_TIMEOUT_S)
        self.start_seconds.append(time.monotonic() - began)

    def kill(self, node_id: int) -> None:
        """kill -9 the node (no clean shutdown: the log is what the disk holds)."""
        self._end(self.node(node_id), signal.SIGKILL)

    def stop(self, node_id: int) -> None:
        """A clean shutdown (SIGTERM: leadership moves away first), as in a rolling restart."""
        self._end(self.node(node_id), signal.SIGTERM)

    def restart(self, node_id: int | None = None) -> None:
        """Stop cleanly and start again (the first node when none is named)."""
        target = self.nodes[0].node_id if node_id is None else node_id
        self.stop(target)
        self.start(target)

    def close(self) -> None:
        """Stop every node at once (one by one, the last ones wait for a lost quorum)."""
        running = [node.process for node in self.nodes if node.process and node.running]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _launch(self, node: KafkaNode) -> None:
        if node.running:
            raise KafkaLaunchError(f"Kafka node {node.node_id} is already running")
        with node.log_file.open("ab") as sink:
            node.log_offset = sink.tell()
            node.process = subprocess.Popen(
                [
                    *_java(self.jars, node.directory, self.java_options),
                    "kafka.Kafka",
                    str(node.directory / "server.properties"),
                ],
                stdout=sink,
                stderr=sink,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @staticmethod
    def _end(node: KafkaNode, how: signal.Signals) -> None:
        process = node.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def start_kafka(
    directory: Path,
    brokers: int = 1,
    extra_props: Mapping[str, str] | None = None,
    listeners: Mapping[str, str] | None = None,
    format_args: Sequence[str] = (),
    *,
    java_options: Sequence[str] = FAST_START,
) -> Iterator[KafkaCluster]:
    """Format and start ``brokers`` KRaft nodes under ``directory``; stop them on exit."""
    jars = resolve_jars()
    extra, named = dict(extra_props or {}), dict(listeners or {})
    nodes = [
        KafkaNode(
            i,
            directory / f"node-{i}",
            {name: free_port() for name in [BROKER_LISTENER, CONTROLLER_LISTENER, *named]},
        )
        for i in range(1, brokers + 1)
    ]
    cluster = KafkaCluster(directory, nodes, jars, extra, named, java_options)
    cluster_id = _cluster_id()
    for node in nodes:
        node.directory.mkdir(parents=True, exist_ok=True)
        (node.directory / "server.properties").write_text(
            broker_properties(node, nodes, named, extra)
        )
        (node.directory / "log4j2.properties").write_text(LOG4J2)
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda node: _format(jars, node, cluster_id, format_args), nodes))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64  # noqa: PLC0415

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def broker_properties(
    node: KafkaNode, nodes: list[KafkaNode], named: Mapping[str, str], extra: Mapping[str, str]
) -> str:
    """The server.properties of ``node`` (docker-compose.yml's Kafka is held to it)."""
    replicas = min(len(nodes), 3)
    names = [BROKER_LISTENER, CONTROLLER_LISTENER, *named]
    protocols = {BROKER_LISTENER: "PLAINTEXT", CONTROLLER_LISTENER: "PLAINTEXT", **named}
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(
            f"{n.node_id}@{HOST}:{n.ports[CONTROLLER_LISTENER]}" for n in nodes
        ),
        "controller.listener.names": CONTROLLER_LISTENER,
        "inter.broker.listener.name": BROKER_LISTENER,
        "listeners": ",".join(f"{name}://{HOST}:{node.ports[name]}" for name in names),
        "advertised.listeners": ",".join(
            f"{name}://{HOST}:{node.ports[name]}" for name in names if name != CONTROLLER_LISTENER
        ),
        "listener.security.protocol.map": ",".join(f"{n}:{p}" for n, p in protocols.items()),
        "log.dirs": str(node.directory / "data"),
        # Tests join groups many times a run, with 2000 ms sessions.
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        # As in docker-compose.yml: topics come from the code that needs them.
        "auto.create.topics.enable": "false",
        # Internal topics: as replicated as the cluster allows (production: 3, ISR 2).
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min(replicas, 2)),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min(replicas, 2)),
        **extra,
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _java(jars: Path, directory: Path, options: Sequence[str] = FAST_START) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise KafkaLaunchError(
            "java is not installed: Apache Kafka 4 needs Java 17 or later "
            "(Debian package openjdk-17-jre-headless)"
        )
    return [
        java,
        f"-Xmx{HEAP}",
        "-Xms128m",
        "-XX:+UseG1GC",
        *options,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={directory / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={directory}",
        "-cp",
        f"{jars}/*",
    ]


def _format(jars: Path, node: KafkaNode, cluster_id: str, format_args: Sequence[str]) -> None:
    done = subprocess.run(
        # --cluster-id=: a random id may start with "-", which a separate argument would
        # turn into an option.
        [
            *_java(jars, node.directory),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "--config",
            str(node.directory / "server.properties"),
            *format_args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise KafkaLaunchError(
            f"kafka-storage format (node {node.node_id}) failed: "
            f"{(done.stdout + done.stderr)[-2000:]}"
        )


def _wait_started(node: KafkaNode, deadline: float) -> None:
    """Until the node logs that it started (a KRaft broker says so once it is unfenced,
    i.e. serves metadata and takes partitions) and its client port answers."""
    while True:
        if node.process is None or node.process.poll() is not None:
            raise KafkaLaunchError(
                f"Kafka node {node.node_id} exited at start: {_tail(node.log_file)}"
            )
        if STARTED_LINE in _since(node.log_file, node.log_offset) and _port_open(node.address):
            return
        if time.monotonic() > deadline:
            raise KafkaLaunchError(
                f"Kafka node {node.node_id} did not start in "
                f"{START_TIMEOUT_S:.0f} s: {_tail(node.log_file)}"
            )
        time.sleep(0.1)


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


def _since(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def _tail(path: Path, size: int = 3000) -> str:
    if not path.exists():
        return "(no log)"
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read().decode(errors="replace")


LOG4J2 = """\
status = warn
appender.file.type = Console
appender.file.name = STDOUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
"""
