"""Every setting, its default for the embedded stack, and its PHASESTREAM_ variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import platformdirs
from pydantic import Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from phasestream.local_stack import running_embedded_postgres_url

EMBEDDED_HOST = "127.0.0.1"
#: HS256 needs a key at least as long as its hash (RFC 7518 3.2): shorter ones can be guessed.
MIN_JWT_SECRET_BYTES = 32


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("phasestream"))


class Settings(BaseSettings):
    """Read from the environment (prefix PHASESTREAM_) and from a .env file if present."""

    model_config = SettingsConfigDict(
        env_prefix="PHASESTREAM_", env_file=".env", extra="ignore", frozen=True
    )

    kafka_bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers; unset means the embedded broker."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How clients talk to Kafka: PLAINTEXT, SSL (TLS), "
        "SASL_PLAINTEXT (login, no TLS) or SASL_SSL (login over TLS, what managed clusters "
        "want).",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN",
        description="SASL login mechanism (with SASL_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    kafka_sasl_username: str | None = Field(
        None, description="SASL user name; required with SASL_*."
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password; required with SASL_*."
    )
    kafka_ssl_ca_file: Path | None = Field(
        None,
        description="PEM file of the CAs that sign the brokers' certificates (with "
        "SSL, SASL_SSL); unset: the system's trusted CAs.",
    )
    kafka_ssl_cert_file: Path | None = Field(
        None,
        description="PEM client certificate for mutual TLS (may hold the key too); unset: none.",
    )
    kafka_ssl_key_file: Path | None = Field(
        None, description="PEM private key of the client certificate, if not in its file."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted client key."
    )
    kafka_ssl_check_hostname: bool = Field(
        True,
        description="Check that each broker's certificate names the host connected "
        "to; turn off only for a cluster whose certificates name other hosts.",
    )
    embedded_kafka_port: PositiveInt = Field(
        9092, description="Port of the embedded Tansu broker that `phasestream dev` starts."
    )
    kafka_idempotent_producer: bool = Field(
        False,
        description="Idempotent producers (Apache Kafka only; the embedded Tansu has "
        "no InitProducerId): a send retried across a leader failover is written once.",
    )
    database_url: str | None = Field(
        None, description="PostgreSQL URL; unset means the embedded Postgres."
    )
    api_database_url: str | None = Field(
        None,
        description="PostgreSQL URL of the HTTP API (and the dashboard's data) and of "
        "`report` and `sla suggest`: the reader role (docs/security.md); unset: the "
        "database URL.",
    )
    db_role_prefix: str = Field(
        "phasestream",
        pattern=r"^[a-z_][a-z0-9_]{0,48}$",
        description="`db roles` creates the roles <prefix>_owner (migrations, replay), "
        "<prefix>_writer (consumers) and <prefix>_reader (API, reports, analysts).",
    )
    db_owner_password: SecretStr | None = Field(
        None, description="Password `db roles` gives the owner role; unset: left as it is."
    )
    db_writer_password: SecretStr | None = Field(
        None, description="Password `db roles` gives the writer role; unset: left as it is."
    )
    db_reader_password: SecretStr | None = Field(
        None, description="Password `db roles` gives the reader role; unset: left as it is."
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Per-user directory for the embedded Postgres data.",
    )

    phase_events_topic: str = Field(
        "workflow.phase-events",
        min_length=1,
        description="Topic of the phase events (key = workflow id).",
    )
    dlq_topic: str = Field(
        "workflow.phase-events.dlq",
        min_length=1,
        description="Dead-letter topic: invalid input with its reason.",
    )
    dlq_summary_max_letters: PositiveInt = Field(
        10_000,
        le=10_000_000,
        description="Most dead letters GET /api/dlq reads (the newest "
        "of each partition); it says truncated when the topic holds more.",
    )
    dlq_summary_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Longest GET /api/dlq waits for the broker (and for "
        "a scan already running) before it answers 503.",
    )
    dlq_summary_cache_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="How long GET /api/dlq reuses its last answer (or "
        "failure) before it reads the dead-letter topic again; 0 reads it every time.",
    )
    topic_partitions: PositiveInt = Field(6, description="Partitions of topics we create.")
    topic_replication_factor: PositiveInt = Field(1, description="Replication of topics we create.")

    sla_violations_topic: str = Field(
        "workflow.sla-violations",
        min_length=1,
        description="Topic of SLA violations (key = workflow id).",
    )
    audit_consumer_group: str = Field(
        "phasestream-audit",
        min_length=1,
        description="Consumer group of the audit projector; also names its stored positions.",
    )
    audit_retention_months: int = Field(
        0,
        ge=0,
        description="Months of audit log to keep: month partitions whose rows are all "
        "older are dropped (checked at start and daily); 0 keeps everything.",
    )
    sla_consumer_group: str = Field(
        "phasestream-sla", min_length=1, description="Consumer group of the SLA monitor."
    )
    sla_violations_consumer_group: str = Field(
        "phasestream-sla-violations",
        min_length=1,
        description="Consumer group projecting SLA violations into Postgres.",
    )
    metrics_consumer_group: str = Field(
        "phasestream-metrics",
        min_length=1,
        description="Consumer group of the metrics consumer (metrics_data and /metrics).",
    )
    sla_grace_ms: int = Field(
        5000,
        ge=0,
        description="How long past its deadline a running phase waits for a "
        "late-arriving end before it is reported overdue.",
    )
    sla_check_interval_ms: PositiveInt = Field(
        1000, description="How often the SLA monitor looks for overdue phases."
    )
    sla_thresholds_reload_s: PositiveInt = Field(
        30, description="How often the SLA thresholds are re-read from their table."
    )
    sla_early_end_ttl_s: PositiveInt = Field(
        86_400, description="How long an end that came before its start waits for it."
    )
    running_at_risk_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Share of its SLA threshold after which a running "
        "phase is at_risk (report running, /api/running, the running-phase gauges).",
    )
    running_lookback_hours: PositiveInt = Field(
        24,
        description="Starts this recent with no end are running phases; older ones "
        "count as abandoned, which bounds the audit-log scan of report running.",
    )
    outbox_relay_interval_ms: PositiveInt = Field(
        200, description="How often decided SLA violations are published when idle."
    )
    rollback_commands_topic: str = Field(
        "workflow.rollback-commands",
        min_length=1,
        description="Topic of rollback, retry, gave-up and loop-stopped commands.",
    )
    rollback_consumer_group: str = Field(
        "phasestream-rollback",
        min_length=1,
        description="Consumer group of the rollback commander.",
    )
    rollback_enabled: bool = Field(
        True, description="Issue a rollback to phase N-1 when phase N > 1 fails."
    )
    rollback_max_per_workflow: PositiveInt = Field(
        5,
        description="Rollbacks of one workflow after which a rollback loop is stopped and "
        "reported instead.",
    )
    retry_enabled: bool = Field(
        False, description="After a rollback, re-queue phase N-1 with exponential backoff."
    )
    retry_interval_ms: PositiveInt = Field(
        1000, description="Delay before the first retry (before jitter)."
    )
    retry_backoff_rate: float = Field(
        2.0, ge=1.0, description="Each retry's delay is the previous one times this."
    )
    retry_max_attempts: PositiveInt = Field(
        3, description="Retries of one workflow before it gives up."
    )
    retry_max_delay_ms: PositiveInt = Field(
        60_000, description="Longest delay between retries (before jitter)."
    )
    retry_jitter: Literal["full", "none"] = Field(
        "full",
        description="full: wait a random share of each delay (spreads a storm of "
        "retries); none: wait the delay exactly.",
    )
    retry_check_interval_ms: PositiveInt = Field(
        200, description="How often the commander looks for due retries."
    )
    notify_consumer_group: str = Field(
        "phasestream-notify", min_length=1, description="Consumer group of the notifier."
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HS256 secret (at least 32 bytes) of the tokens /ws and /api "
        "accept; set, it (or a JWKS URL) makes /api require a token. Unset and no JWKS URL: "
        "/ws refuses every connection.",
    )
    jwt_jwks_url: str | None = Field(
        None,
        description="JWKS URL of an identity provider whose RS256/ES256 tokens /api "
        "and /ws accept (keys cached); set, /api requires a token.",
    )
    jwt_issuer: str | None = Field(
        None,
        description="Required `iss` of every token (and set in minted ones); unset: not checked.",
    )
    jwt_audience: str | None = Field(
        None,
        description="Required `aud` of every token (and set in minted ones); unset: not checked.",
    )
    jwt_max_lifetime_s: PositiveInt = Field(
        86_400, description="A token whose `exp` is further ahead than this is refused."
    )
    jwt_role_claim: str = Field(
        "role",
        min_length=1,
        description="Claim holding a token's role (a string or a list of strings).",
    )
    api_roles: str = Field(
        "analyst,admin",
        min_length=1,
        description="Roles (comma-separated) whose tokens may read /api and the dashboard's data.",
    )
    api_auth: Literal["auto", "off"] = Field(
        "auto",
        description="auto: /api needs a token once a JWT secret or JWKS URL is set, "
        "and is refused on a non-loopback address without one; off: served without a "
        "token (logged).",
    )
    http_allowed_hosts: str = Field(
        "localhost,127.0.0.1,::1",
        min_length=1,
        description="Host header names the HTTP "
        "server answers besides its bound address (comma-separated; `*` any), against DNS "
        "rebinding; /healthz answers any.",
    )
    http_metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token /metrics requires (Prometheus `authorization`); "
        "unset: /metrics is open and serves no exemplars unless enabled.",
    )
    http_metrics_exemplars: bool = Field(
        False,
        description="Serve OpenMetrics exemplars (user and workflow ids) on an open "
        "/metrics; with a metrics token they go to authorised scrapes.",
    )
    ws_max_connections: PositiveInt = Field(1000, description="Most open /ws connections in total.")
    ws_max_connections_per_user: PositiveInt = Field(
        8, description="Most open /ws connections of one user."
    )
    slack_webhook_url: SecretStr | None = Field(
        None,
        description="Slack incoming webhook for alerts (a secret: its path is the "
        "token); unset: no Slack alerts.",
    )
    smtp_host: str | None = Field(None, description="SMTP server for e-mail alerts; unset: none.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    smtp_starttls: bool = Field(False, description="Use STARTTLS with the SMTP server.")
    smtp_username: str | None = Field(None, description="SMTP user, if it needs one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_from: str = Field("phasestream@localhost", description="Sender of e-mail alerts.")
    smtp_to: str = Field("", description="Recipients of e-mail alerts, comma-separated.")
    notify_dedup_window_s: PositiveInt = Field(
        600, description="One Slack/e-mail alert per workflow and kind within this window."
    )
    notify_rate_limit_per_minute: PositiveInt = Field(
        30, description="Most Slack/e-mail alerts per minute, per sink."
    )
    notify_retry_max_attempts: PositiveInt = Field(
        5, description="Delivery attempts of one alert before it is dropped (and counted)."
    )
    http_host: str = Field(
        "127.0.0.1",
        description="Address of the HTTP server (/metrics, /healthz); 0.0.0.0 in containers.",
    )
    http_port: int = Field(
        6066, ge=0, le=65535, description="Port of the HTTP server; 0 picks a free one."
    )
    progress_interval_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="How often each consumer logs a progress line "
        "(seconds); a line only when something changed since the last one.",
    )
    batch_max_records: PositiveInt = Field(5000, description="Most records in one batch.")
    batch_max_wait_ms: PositiveInt = Field(
        100, description="Longest wait for a batch to fill (Kafka fetch_max_wait_ms)."
    )
    writes_in_flight: int = Field(
        2,
        ge=1,
        le=2,
        description="Batches the audit projector writes at once, each on its own "
        "connection; 1 writes one at a time (the other projectors always do).",
    )
    batch_min_bytes: PositiveInt = Field(
        1,
        le=52_428_800,
        description="Bytes a fetch waits for (Kafka fetch_min_bytes), at most "
        "PHASESTREAM_BATCH_MAX_WAIT_MS; 1 returns as soon as a record is there.",
    )
    consumer_session_timeout_ms: PositiveInt = Field(
        6000, description="Consumer group session timeout; the local broker delays joins by half."
    )
    producer_linger_ms: int = Field(
        20, ge=0, description="Producer linger; at least 20 ms keeps the local broker cool."
    )
    max_event_bytes: PositiveInt = Field(
        1_048_576, description="Largest accepted event payload; larger goes to the DLQ."
    )
    on_lost_records: Literal["fail", "skip"] = Field(
        "fail",
        description="When records were deleted (retention) before a consumer read "
        "them: fail (stop with an error naming the offsets) or skip (log, count in "
        "phasestream_consumer_lost_records_total, go on).",
    )
    dlq_max_value_bytes: PositiveInt = Field(
        1_000_000,
        description="Longest value a dead letter carries; longer ones are cut "
        "(headers give the original size and SHA-256), so the DLQ topic always takes them.",
    )
    db_retry_initial_ms: PositiveInt = Field(
        200, description="First delay before retrying a Postgres write that could not reach it."
    )
    db_retry_max_ms: PositiveInt = Field(10_000, description="Longest delay between retries.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR."
    )

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_JWT_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
            )
        return secret

    @model_validator(mode="after")
    def _kafka_security_fits(self) -> Self:
        problem = kafka_security_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"{EMBEDDED_HOST}:{self.embedded_kafka_port}"

    @property
    def uses_embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def uses_embedded_postgres(self) -> bool:
        return not self.database_url

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def resolved_database_url(self) -> str:
        """Where the consumers connect: the configured URL, else the embedded Postgres that
        `phasestream dev` runs (a StackError in one line when it does not)."""
        return self.database_url or running_embedded_postgres_url(self.postgres_dir)

    @property
    def resolved_reader_url(self) -> str:
        """Where the read-only surfaces (HTTP API, reports) connect: the reader role's URL."""
        return self.api_database_url or self.resolved_database_url

    @property
    def consumer_roles(self) -> dict[str, str]:
        """Role -> consumer group of every consumer that stores its positions in Postgres (the
        rows of phasestream_projection_status): whose freshness report running and
        /api/running show. ``source`` is the audit projector, the one the running list is
        read from."""
        return {
            "source": self.audit_consumer_group,
            "sla_monitor": self.sla_consumer_group,
            "sla_violations": self.sla_violations_consumer_group,
            "metrics": self.metrics_consumer_group,
            "rollback": self.rollback_consumer_group,
        }


def kafka_security_problem(s: Settings) -> str | None:
    """What is wrong with the combination of Kafka security settings, if anything."""
    protocol = f"PHASESTREAM_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}"
    if s.kafka_security_protocol != "PLAINTEXT" and s.uses_embedded_kafka:
        return (
            f"{protocol} needs PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS: the embedded broker "
            f"speaks PLAINTEXT only"
        )
    return _sasl_problem(s, protocol) or _tls_problem(s, protocol)


def _sasl_problem(s: Settings, protocol: str) -> str | None:
    if not s.kafka_security_protocol.startswith("SASL_"):
        if s.kafka_sasl_username or s.kafka_sasl_password is not None:
            return (
                f"PHASESTREAM_KAFKA_SASL_USERNAME/PASSWORD are set but {protocol} does "
                f"not log in: use SASL_SSL (or SASL_PLAINTEXT), or unset them"
            )
        return None
    if not s.kafka_sasl_username:
        return f"{protocol} logs in: set PHASESTREAM_KAFKA_SASL_USERNAME"
    if s.kafka_sasl_password is None:
        return f"{protocol} logs in: set PHASESTREAM_KAFKA_SASL_PASSWORD"
    return None


def _tls_problem(s: Settings, protocol: str) -> str | None:
    files = {
        "PHASESTREAM_KAFKA_SSL_CA_FILE": s.kafka_ssl_ca_file,
        "PHASESTREAM_KAFKA_SSL_CERT_FILE": s.kafka_ssl_cert_file,
        "PHASESTREAM_KAFKA_SSL_KEY_FILE": s.kafka_ssl_key_file,
        "PHASESTREAM_KAFKA_SSL_KEY_PASSWORD": s.kafka_ssl_key_password,
    }
    given = [name for name, value in files.items() if value is not None]
    if given and not s.kafka_security_protocol.endswith("SSL"):
        return f"{given[0]} is set but {protocol} uses no TLS: use SSL or SASL_SSL, or unset it"
    if s.kafka_ssl_cert_file is None and (s.kafka_ssl_key_file or s.kafka_ssl_key_password):
        return (
            "PHASESTREAM_KAFKA_SSL_KEY_FILE/KEY_PASSWORD belong to a client certificate: "
            "set PHASESTREAM_KAFKA_SSL_CERT_FILE too"
        )
    return None
