"""E-mail alerts over SMTP (stdlib smtplib, in a worker thread so the loop never waits)."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Final

from models.notifications.value import Notification
from phasestream.delivery.sink import DeliveryError
from phasestream.redact import scrub

TIMEOUT_S: Final = 10.0
SUBJECT_PREFIX: Final = "[phasestream] "


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    starttls: bool
    username: str | None
    password: str | None = field(repr=False)  # a secret: never in a repr or log
    sender: str
    recipients: tuple[str, ...]


def email_message(notification: Notification, config: SmtpConfig) -> EmailMessage:
    n = notification
    message = EmailMessage()
    # A workflow id may hold line breaks; a header must not.
    message["Subject"] = SUBJECT_PREFIX + " ".join(n.title.split())
    message["From"] = config.sender
    message["To"] = ", ".join(config.recipients)
    message["Date"] = formatdate(localtime=False)
    # The notification's id: a mail client (or a person) can tell a resent alert.
    message["Message-ID"] = f"<{n.id}@phasestream>"
    lines = [
        n.text,
        "",
        f"workflow: {n.workflow_id}",
        f"user: {n.user_id}",
        f"kind: {n.kind.value}",
        f"at: {n.occurred_at.isoformat()}",
    ]
    lines += [f"{key}: {value}" for key, value in n.details.items() if value is not None]
    message.set_content("\n".join(lines) + "\n")
    return message


class EmailSender:
    """A Sender: one SMTP session per alert (alerts are rare; a kept session goes stale)."""

    name = "email"

    def __init__(self, config: SmtpConfig, timeout_s: float = TIMEOUT_S) -> None:
        self._config = config
        self._timeout_s = timeout_s

    async def send(self, notification: Notification) -> None:
        await asyncio.to_thread(self._send, email_message(notification, self._config))

    def _send(self, message: EmailMessage) -> None:
        c = self._config
        try:
            with smtplib.SMTP(c.host, c.port, timeout=self._timeout_s) as smtp:
                if c.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if c.username:
                    smtp.login(c.username, c.password or "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            # 4xx is the server's "try again later"; 5xx is a refusal that will not change.
            # A server may echo what it was sent (the AUTH exchange): scrub the password.
            reply = exc.smtp_error
            text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {self._scrub(text)}", retriable=exc.smtp_code < 500
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {self._scrub(str(exc))}") from None

    def _scrub(self, text: str) -> str:
        password = self._config.password
        # smtplib sends the password base64-encoded (AUTH PLAIN/LOGIN): hide that form too.
        encoded = base64.b64encode(password.encode()).decode() if password else None
        return scrub(text, password, encoded)
