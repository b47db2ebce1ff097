"""The Kafka cluster the settings name, with its security; and a start-up check of it
whose errors name the setting to fix (never a secret's value)."""

from __future__ import annotations

import ssl

from aiokafka.helpers import create_ssl_context

from models.errors import PhasestreamError
from phasestream.settings import Settings
from streams.kafka import KafkaCluster, KafkaSecurity, SaslLogin
from streams.kafka_access import (
    BrokerUnreachableError,
    CertificateRefusedError,
    ConnectionDroppedError,
    KafkaAccessError,
    LoginRefusedError,
    MechanismRefusedError,
    TlsFailedError,
    check_access,
)

CA_FILE = "PHASESTREAM_KAFKA_SSL_CA_FILE"
CHECK_HOSTNAME = "PHASESTREAM_KAFKA_SSL_CHECK_HOSTNAME"


class KafkaSetupError(PhasestreamError):
    """Kafka cannot be used as configured (a file that does not load, a refused login or
    certificate, no broker there); the message names the setting to look at."""


def kafka_cluster(settings: Settings) -> KafkaCluster:
    """The cluster every client of this process connects to, TLS and login included."""
    protocol = settings.kafka_security_protocol
    context = _ssl_context(settings) if protocol in {"SSL", "SASL_SSL"} else None
    login = None
    user, password = settings.kafka_sasl_username, settings.kafka_sasl_password
    # The settings' validation refuses SASL_* without both, and either without SASL_*.
    if user and password is not None:
        login = SaslLogin(settings.kafka_sasl_mechanism, user, password.get_secret_value())
    return KafkaCluster(settings.bootstrap_servers, KafkaSecurity(protocol, context, login))


def _ssl_context(s: Settings) -> ssl.SSLContext:
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=s.kafka_ssl_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSetupError(
            f"{CA_FILE}={s.kafka_ssl_ca_file}: no CA certificates could "
            f"be read from it ({_why(exc)})"
        ) from None
    # Chains are still verified without it; only the name in the certificate is not.
    context.check_hostname = s.kafka_ssl_check_hostname
    if s.kafka_ssl_cert_file is not None:
        password = s.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                s.kafka_ssl_cert_file,
                s.kafka_ssl_key_file,
                password.get_secret_value() if password else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSetupError(
                f"PHASESTREAM_KAFKA_SSL_CERT_FILE={s.kafka_ssl_cert_file}, "
                f"PHASESTREAM_KAFKA_SSL_KEY_FILE={s.kafka_ssl_key_file}: the client "
                f"certificate and its key could not be loaded ({_why(exc)}); check both files "
                f"and PHASESTREAM_KAFKA_SSL_KEY_PASSWORD"
            ) from None
    return context


def _why(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return str(exc.strerror or exc)


async def check_kafka(settings: Settings) -> KafkaCluster:
    """Connect once as every client will; a refusal becomes a one-line error naming the
    setting to fix. Returns the checked cluster."""
    cluster = kafka_cluster(settings)
    try:
        await check_access(cluster)
    except KafkaAccessError as exc:
        raise KafkaSetupError(explain(exc, settings)) from None
    return cluster


def explain(exc: KafkaAccessError, s: Settings) -> str:
    """What went wrong at ``exc.address``, and which setting to look at."""
    at = exc.address
    if isinstance(exc, LoginRefusedError):
        return (
            f"Kafka at {at} refused the SASL login for PHASESTREAM_KAFKA_SASL_USERNAME="
            f"{s.kafka_sasl_username} ({s.kafka_sasl_mechanism}): check "
            f"PHASESTREAM_KAFKA_SASL_PASSWORD (and that the user exists for that mechanism)"
        )
    if isinstance(exc, MechanismRefusedError):
        return (
            f"Kafka at {at} does not offer PHASESTREAM_KAFKA_SASL_MECHANISM="
            f"{s.kafka_sasl_mechanism} on this listener: set the mechanism the cluster "
            f"names (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
        )
    if isinstance(exc, CertificateRefusedError):
        return _certificate_refused(exc, s)
    if isinstance(exc, BrokerUnreachableError):
        return f"no Kafka broker answers at PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS={at}: {exc.reason}"
    protocol = f"PHASESTREAM_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}"
    if isinstance(exc, TlsFailedError | ConnectionDroppedError):
        return (
            f"Kafka at {at} ended the connection ({exc.reason}): check {protocol} against "
            f"the listener's, and whether it wants a client certificate "
            f"(PHASESTREAM_KAFKA_SSL_CERT_FILE)"
        )
    return f"Kafka at {at} could not be used with {protocol}: {exc.reason}"


def _certificate_refused(exc: CertificateRefusedError, s: Settings) -> str:
    if exc.name_mismatch:
        return (
            f"the TLS certificate of {exc.address} is for another host name "
            f"({exc.reason}): connect by a name it lists, or turn hostname verification "
            f"off with {CHECK_HOSTNAME}=false if you trust {CA_FILE}'s CA for any host"
        )
    trusted = (
        f"{CA_FILE}={s.kafka_ssl_ca_file}"
        if s.kafka_ssl_ca_file
        else (f"the system's CAs ({CA_FILE} is unset)")
    )
    return (
        f"the TLS certificate of {exc.address} is not trusted ({exc.reason}): it is not "
        f"signed by {trusted}; point {CA_FILE} at the CA that signed it"
    )
