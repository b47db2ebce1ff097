"""Slack alerts: a POST of ``{"text": ...}`` to an incoming webhook."""

from __future__ import annotations

from types import TracebackType
from typing import Final

import aiohttp
import orjson

from models.notifications.value import Notification
from phasestream.delivery.sink import DeliveryError
from phasestream.redact import scrub, url_secrets

TIMEOUT_S: Final = 10.0
TOO_MANY_REQUESTS: Final = 429


def slack_text(notification: Notification) -> str:
    """Slack's mrkdwn: the title in bold; &, < and > escaped as Slack asks."""
    return f"*{_escape(notification.title)}*\n{_escape(notification.text)}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackSender:
    """A Sender; an async context manager that holds one HTTP session."""

    name = "slack"

    def __init__(self, webhook_url: str, timeout_s: float = TIMEOUT_S) -> None:
        self._url = webhook_url
        self._secrets = url_secrets(webhook_url)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SlackSender:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, notification: Notification) -> None:
        if self._session is None:
            raise RuntimeError("SlackSender is used outside 'async with'")
        body = orjson.dumps({"text": slack_text(notification)})
        try:
            async with self._session.post(
                self._url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if response.status >= 300:
                    detail = (await response.text(errors="replace"))[:200]
                    # 4xx other than 429 is our request or the webhook: retrying cannot help.
                    retriable = response.status >= 500 or response.status == TOO_MANY_REQUESTS
                    raise DeliveryError(
                        f"HTTP {response.status}: {self._scrub(detail)}", retriable=retriable
                    )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # aiohttp quotes the webhook URL (the credential) in its errors; ``from None``
            # keeps it out of any traceback a caller might log. A ValueError here is the
            # URL's (yarl's parser).
            raise DeliveryError(
                f"{type(exc).__name__}: {self._scrub(str(exc))}",
                retriable=not isinstance(exc, _REFUSED_URL),
            ) from None

    def _scrub(self, text: str) -> str:
        return scrub(text, *self._secrets)


#: The webhook URL (or where it redirects) is unusable: no retry can help.
_REFUSED_URL: Final = (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError)
