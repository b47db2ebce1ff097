"""Can we reach the cluster, with the security we were given? One typed answer per cause.

aiokafka's clients log why a bootstrap server failed (TLS refused, SASL login refused) and
then raise only "Unable to bootstrap". ``check_access`` connects the way every client will
(TLS handshake, SASL login, a metadata request) and raises the cause as a type, so the
shell can say which setting to fix before any consumer starts.
"""

from __future__ import annotations

import ssl
from typing import Final

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.metadata import MetadataRequest

from models.errors import PhasestreamError
from streams.kafka import KafkaCluster

CHECK_TIMEOUT_MS: Final = 10_000
#: OpenSSL's verify codes for a certificate issued to another host name or address.
NAME_MISMATCH_CODES: Final = frozenset({62, 64})


class KafkaAccessError(PhasestreamError):
    """The cluster at ``address`` could not be used with the configured security."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason


class LoginRefusedError(KafkaAccessError):
    """The broker refused the SASL login (wrong password, unknown user)."""


class MechanismRefusedError(KafkaAccessError):
    """The broker does not offer the SASL mechanism asked for."""


class CertificateRefusedError(KafkaAccessError):
    """We refused the broker's certificate: untrusted, or issued to another name."""

    def __init__(self, address: str, reason: str, *, name_mismatch: bool) -> None:
        super().__init__(address, reason)
        self.name_mismatch = name_mismatch


class TlsFailedError(KafkaAccessError):
    """The TLS handshake failed for another reason (no TLS there, client cert wanted)."""


class ConnectionDroppedError(KafkaAccessError):
    """The broker accepted the connection, then closed it (a listener that wants
    another protocol, or a client certificate)."""


class BrokerUnreachableError(KafkaAccessError):
    """No bootstrap server answered."""

    retriable = True


async def check_access(cluster: KafkaCluster, *, timeout_ms: int = CHECK_TIMEOUT_MS) -> None:
    """Connect to a bootstrap server as the clients will, and ask for metadata.

    A refusal (certificate, login) is raised at once: the other servers of one cluster
    share its security. Unreachable servers are skipped until one answers.
    """
    unreachable = []
    for host, port, _ in collect_hosts(cluster.bootstrap_servers, randomize=False):
        address = f"{host}:{port}"
        try:
            await _ask_metadata(cluster, host, port, timeout_ms)
        except (OSError, TimeoutError) as exc:
            unreachable.append(f"{address} ({type(exc).__name__}: {exc})")
            continue
        return
    raise BrokerUnreachableError(cluster.bootstrap_servers, "; ".join(unreachable))


async def _ask_metadata(cluster: KafkaCluster, host: str, port: int, timeout_ms: int) -> None:
    address = f"{host}:{port}"
    try:
        conn = await create_conn(
            host,
            port,
            client_id="phasestream-check",
            request_timeout_ms=timeout_ms,
            **cluster.security.client_kwargs(),
        )
    except ssl.SSLCertVerificationError as exc:
        raise CertificateRefusedError(
            address,
            str(exc.verify_message),
            name_mismatch=exc.verify_code in NAME_MISMATCH_CODES,
        ) from exc
    except ssl.SSLError as exc:
        raise TlsFailedError(address, exc.reason or str(exc)) from exc
    except ConnectionResetError as exc:  # it took the connection, then dropped it
        raise ConnectionDroppedError(address, f"connection reset ({exc})") from exc
    except SaslAuthenticationFailed as exc:
        raise LoginRefusedError(address, str(exc)) from exc
    except UnsupportedSaslMechanismError as exc:
        raise MechanismRefusedError(address, str(exc)) from exc
    except KafkaConnectionError as exc:
        raise ConnectionDroppedError(address, str(exc)) from exc
    except KafkaError as exc:
        raise KafkaAccessError(address, f"{type(exc).__name__}: {exc}") from exc
    try:
        await conn.send(MetadataRequest([]))
    except KafkaConnectionError as exc:
        raise ConnectionDroppedError(address, str(exc)) from exc
    except KafkaError as exc:
        raise KafkaAccessError(address, f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
