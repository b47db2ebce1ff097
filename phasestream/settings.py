"""Every setting, its default for the embedded stack, and its PHASESTREAM_ variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_HOST = "127.0.0.1"


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("phasestream"))


class Settings(BaseSettings):
    """Read from the environment (prefix PHASESTREAM_) and from a .env file if present."""

    model_config = SettingsConfigDict(env_prefix="PHASESTREAM_", env_file=".env",
                                      extra="ignore", frozen=True)

    kafka_bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers; unset means the embedded broker.")
    embedded_kafka_port: PositiveInt = Field(
        9092, description="Port of the embedded Tansu broker that `phasestream dev` starts.")
    database_url: str | None = Field(
        None, description="PostgreSQL URL; unset means the embedded Postgres.")
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Per-user directory for the embedded Postgres data.")

    phase_events_topic: str = Field("workflow.phase-events", min_length=1,
                                    description="Topic of the phase events (key = workflow id).")
    dlq_topic: str = Field("workflow.phase-events.dlq", min_length=1,
                           description="Dead-letter topic: invalid input with its reason.")
    topic_partitions: PositiveInt = Field(6, description="Partitions of topics we create.")
    topic_replication_factor: PositiveInt = Field(1, description="Replication of topics we create.")

    sla_violations_topic: str = Field(
        "workflow.sla-violations", min_length=1,
        description="Topic of SLA violations (key = workflow id).")
    audit_consumer_group: str = Field(
        "phasestream-audit", min_length=1,
        description="Consumer group of the audit projector; also names its stored positions.")
    audit_retention_months: int = Field(
        0, ge=0, description="Months of audit log to keep: month partitions whose rows are all "
        "older are dropped (checked at start and daily); 0 keeps everything.")
    sla_consumer_group: str = Field(
        "phasestream-sla", min_length=1, description="Consumer group of the SLA monitor.")
    sla_violations_consumer_group: str = Field(
        "phasestream-sla-violations", min_length=1,
        description="Consumer group projecting SLA violations into Postgres.")
    metrics_consumer_group: str = Field(
        "phasestream-metrics", min_length=1,
        description="Consumer group of the metrics consumer (metrics_data and /metrics).")
    sla_grace_ms: int = Field(
        5000, ge=0, description="How long past its deadline a running phase waits for a "
        "late-arriving end before it is reported overdue.")
    sla_check_interval_ms: PositiveInt = Field(
        1000, description="How often the SLA monitor looks for overdue phases.")
    sla_thresholds_reload_s: PositiveInt = Field(
        30, description="How often the SLA thresholds are re-read from their table.")
    sla_early_end_ttl_s: PositiveInt = Field(
        86_400, description="How long an end that came before its start waits for it.")
    running_at_risk_share: float = Field(
        0.8, gt=0, le=1, description="Share of its SLA threshold after which a running "
        "phase is at_risk (report running, /api/running, the running-phase gauges).")
    running_lookback_hours: PositiveInt = Field(
        24, description="Starts this recent with no end are running phases; older ones "
        "count as abandoned, which bounds the audit-log scan of report running.")
    outbox_relay_interval_ms: PositiveInt = Field(
        200, description="How often decided SLA violations are published when idle.")
    rollback_commands_topic: str = Field(
        "workflow.rollback-commands", min_length=1,
        description="Topic of rollback, retry, gave-up and loop-stopped commands.")
    rollback_consumer_group: str = Field(
        "phasestream-rollback", min_length=1, description="Consumer group of the rollback "
        "commander.")
    rollback_enabled: bool = Field(
        True, description="Issue a rollback to phase N-1 when phase N > 1 fails.")
    rollback_max_per_workflow: PositiveInt = Field(
        5, description="Rollbacks of one workflow after which a rollback loop is stopped and "
        "reported instead.")
    retry_enabled: bool = Field(
        False, description="After a rollback, re-queue phase N-1 with exponential backoff.")
    retry_interval_ms: PositiveInt = Field(
        1000, description="Delay before the first retry (before jitter).")
    retry_backoff_rate: float = Field(
        2.0, ge=1.0, description="Each retry's delay is the previous one times this.")
    retry_max_attempts: PositiveInt = Field(
        3, description="Retries of one workflow before it gives up.")
    retry_max_delay_ms: PositiveInt = Field(
        60_000, description="Longest delay between retries (before jitter).")
    retry_jitter: Literal["full", "none"] = Field(
        "full", description="full: wait a random share of each delay (spreads a storm of "
        "retries); none: wait the delay exactly.")
    retry_check_interval_ms: PositiveInt = Field(
        200, description="How often the commander looks for due retries.")
    notify_consumer_group: str = Field(
        "phasestream-notify", min_length=1, description="Consumer group of the notifier.")
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret of the tokens /ws accepts (subject = user id); "
        "unset: /ws refuses every connection.")
    slack_webhook_url: str | None = Field(
        None, description="Slack incoming webhook for alerts; unset: no Slack alerts.")
    smtp_host: str | None = Field(None, description="SMTP server for e-mail alerts; unset: none.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    smtp_starttls: bool = Field(False, description="Use STARTTLS with the SMTP server.")
    smtp_username: str | None = Field(None, description="SMTP user, if it needs one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_from: str = Field("phasestream@localhost", description="Sender of e-mail alerts.")
    smtp_to: str = Field("", description="Recipients of e-mail alerts, comma-separated.")
    notify_dedup_window_s: PositiveInt = Field(
        600, description="One Slack/e-mail alert per workflow and kind within this window.")
    notify_rate_limit_per_minute: PositiveInt = Field(
        30, description="Most Slack/e-mail alerts per minute, per sink.")
    notify_retry_max_attempts: PositiveInt = Field(
        5, description="Delivery attempts of one alert before it is dropped (and counted).")
    http_host: str = Field(
        "127.0.0.1", description="Address of the HTTP server (/metrics, /healthz); "
        "0.0.0.0 in containers.")
    http_port: int = Field(
        6066, ge=0, le=65535, description="Port of the HTTP server; 0 picks a free one.")
    batch_max_records: PositiveInt = Field(5000, description="Most records in one batch.")
    batch_max_wait_ms: PositiveInt = Field(
        100, description="Longest wait for a batch to fill (Kafka fetch_max_wait_ms).")
    consumer_session_timeout_ms: PositiveInt = Field(
        6000, description="Consumer group session timeout; the local broker delays joins by half.")
    producer_linger_ms: int = Field(
        20, ge=0, description="Producer linger; at least 20 ms keeps the local broker cool.")
    max_event_bytes: PositiveInt = Field(
        1_048_576, description="Largest accepted event payload; larger goes to the DLQ.")
    on_lost_records: Literal["fail", "skip"] = Field(
        "fail", description="When records were deleted (retention) before a consumer read "
        "them: fail (stop with an error naming the offsets) or skip (log, count in "
        "phasestream_consumer_lost_records_total, go on).")
    dlq_max_value_bytes: PositiveInt = Field(
        1_000_000, description="Longest value a dead letter carries; longer ones are cut "
        "(headers give the original size and SHA-256), so the DLQ topic always takes them.")
    db_retry_initial_ms: PositiveInt = Field(
        200, description="First delay before retrying a Postgres write that could not reach it.")
    db_retry_max_ms: PositiveInt = Field(10_000, description="Longest delay between retries.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR.")

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
