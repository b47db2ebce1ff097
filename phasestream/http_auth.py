"""Who may use the HTTP server: the Host allowlist, bearer tokens on /api, the /metrics token.

The data routes (``/api/*`` but its OpenAPI document; the dashboard's page and assets hold
no data and stay open so that it can ask for a token) need a token with an allowed role once
a JWT secret or a JWKS URL is configured, on any address. With neither, they are open on a
loopback address (the embedded default) and refused elsewhere, unless
``PHASESTREAM_API_AUTH=off`` says to serve them to anyone. ``/healthz`` answers everyone.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from phasestream.auth import CHALLENGE, Principal, TokenRefusedError, TokenVerifier, bearer
from phasestream.settings import Settings

log = logging.getLogger(__name__)
OPEN_PATHS: Final = frozenset({"/healthz", "/api/openapi.json"})
PRINCIPAL: Final = web.RequestKey("phasestream_principal", Principal)
WILDCARDS: Final = frozenset({"0.0.0.0", "::", "[::]", ""})


class ApiMode(enum.Enum):
    REQUIRED = "required"  # a token with an allowed role
    OPEN = "open"  # loopback, nothing configured: the embedded default
    OFF = "off"  # PHASESTREAM_API_AUTH=off: served to anyone, on purpose
    REFUSED = "refused"  # a non-loopback address and no way to check a token


@dataclass(frozen=True)
class HttpAccess:
    mode: ApiMode
    verifier: TokenVerifier
    api_roles: frozenset[str]
    allowed_hosts: frozenset[str] | None  # None: any
    metrics_token: str | None = field(repr=False)  # a secret: never in a repr or log
    exemplars: bool
    address: str

    @classmethod
    def from_settings(cls, settings: Settings, address: str | None = None) -> HttpAccess:
        """The policy of a server bound to ``address`` (default: the settings' http_host)."""
        host = settings.http_host if address is None else address
        verifier = token_verifier(settings)
        if settings.api_auth == "off":
            mode = ApiMode.OFF
        elif verifier.configured:
            mode = ApiMode.REQUIRED
        else:
            mode = ApiMode.OPEN if is_loopback(host) else ApiMode.REFUSED
        token = settings.http_metrics_token
        return cls(
            mode,
            verifier,
            _names(settings.api_roles),
            _hosts(settings.http_allowed_hosts, host),
            token.get_secret_value() if token is not None else None,
            settings.http_metrics_exemplars,
            host,
        )

    @property
    def serves_data(self) -> bool:
        return self.mode is not ApiMode.REFUSED

    def log_mode(self) -> None:
        """One line at start: who can read /api and the dashboard's data, and why."""
        roles = " or ".join(sorted(self.api_roles))
        if self.mode is ApiMode.REQUIRED:
            log.info("/api and the dashboard's data need a bearer token with role %s", roles)
        elif self.mode is ApiMode.OPEN:
            log.info(
                "/api and the dashboard are open on loopback %s: no PHASESTREAM_JWT_SECRET "
                "or PHASESTREAM_JWT_JWKS_URL is set",
                self.address,
            )
        elif self.mode is ApiMode.OFF:
            log.warning(
                "PHASESTREAM_API_AUTH=off: /api and the dashboard are served without "
                "a token to anyone who reaches %s",
                self.address,
            )
        else:
            log.error("%s", self.refusal)

    @property
    def refusal(self) -> str:
        return (
            f"not serving /api and the dashboard on {self.address} without "
            "authentication: set PHASESTREAM_JWT_SECRET (32+ bytes) or "
            "PHASESTREAM_JWT_JWKS_URL, or PHASESTREAM_API_AUTH=off to serve them to anyone"
        )

    def host_allowed(self, header: str) -> bool:
        return self.allowed_hosts is None or host_name(header) in self.allowed_hosts

    async def authorise(self, request: web.Request) -> Principal | None:
        """The principal of a data request (None where no token is needed)."""
        if self.mode is not ApiMode.REQUIRED:
            return None
        principal = await self.verifier.verify(bearer(request.headers.get("Authorization", "")))
        if not principal.roles & self.api_roles:
            held = ", ".join(sorted(principal.roles)) or "none"
            raise TokenRefusedError(
                "forbidden",
                f"the token's role is {held}; reading this "
                f"needs {' or '.join(sorted(self.api_roles))}",
                status=403,
            )
        return principal

    def metrics_authorised(self, request: web.Request) -> bool | None:
        """True or False when /metrics has a token (given or not); None when it has none."""
        if self.metrics_token is None:
            return None
        given = bearer(request.headers.get("Authorization", "")) or ""
        return hmac.compare_digest(given.encode(), self.metrics_token.encode())


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without its port: `[::1]:6066` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


def refused(exc: TokenRefusedError) -> web.Response:
    headers = CHALLENGE if exc.status == 401 else {}
    return web.json_response(
        {"error": exc.code, "reason": exc.reason}, status=exc.status, headers=headers
    )


def guard(access: HttpAccess) -> Middleware:
    """The middleware: Host first (DNS rebinding), then the token of a data route."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz" and not access.host_allowed(request.host):
            return web.json_response(
                {
                    "error": "host_not_allowed",
                    "reason": (
                        f"this server does not answer for host {host_name(request.host)[:100]!r} "
                        "(PHASESTREAM_HTTP_ALLOWED_HOSTS)"
                    ),
                },
                status=421,
            )
        if request.path.startswith("/api/") and request.path not in OPEN_PATHS:
            try:
                principal = await access.authorise(request)
            except TokenRefusedError as exc:
                log.info("%s refused from %s: %s", request.path, request.remote, exc.code)
                return refused(exc)
            if principal is not None:
                request[PRINCIPAL] = principal
        return await handler(request)

    return middleware


def attach_refusal(app: web.Application, access: HttpAccess) -> None:
    """In place of the API and dashboard: a 503 that says how to configure authentication."""

    async def refuse(_: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "not_configured", "reason": access.refusal}, status=503)

    app.router.add_get("/api/{tail:.*}", refuse)
    app.router.add_get("/dashboard{tail:.*}", refuse)


def _names(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _hosts(text: str, address: str) -> frozenset[str] | None:
    names = {host_name(name) for name in _names(text)}
    if "*" in names:
        return None
    # The address the server is bound to is how clients reach it (a rebinding page comes
    # with its own name); a wildcard address names no host.
    if address not in WILDCARDS:
        names.add(host_name(address))
    return frozenset(names)


def token_verifier(settings: Settings) -> TokenVerifier:
    """The verifier of the tokens the settings accept."""
    secret = settings.jwt_secret
    return TokenVerifier(
        secret=secret.get_secret_value() if secret is not None else None,
        jwks_url=settings.jwt_jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        max_lifetime_s=settings.jwt_max_lifetime_s,
        role_claim=settings.jwt_role_claim,
    )
