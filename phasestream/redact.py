"""Secrets out of error texts before they reach a log line, an HTTP body or stderr.

A Slack webhook URL is itself the credential (its path is the token), and client
libraries quote URLs in their errors (aiohttp's TooManyRedirects, InvalidUrlClientError,
NonHttpUrlClientError): every URL in a text keeps its scheme and host only, and each
known secret is replaced wherever it appears, URL-shaped or not.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

REDACTED: Final = "<redacted>"
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``scheme://host:port/…``: where it points, without credentials, path or query."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is no number, an unclosed IPv6 bracket
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    return f"{parts.scheme}://{host}{'' if port is None else f':{port}'}/…"


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with each of ``secrets`` (longest first) and every URL's path redacted."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _URL.sub(lambda match: redact_url(match[0]), text)


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of a URL that are secret when the URL is: itself, its path and query
    (a webhook's token), its password."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return (url,)
    path = parts.path if len(parts.path) > 1 else None
    return tuple(s for s in (url, path, parts.query, password) if s)
