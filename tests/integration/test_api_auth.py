"""Who may read the API: tokens (ours and an identity provider's), roles, Host allowlist,
and the server's refusal to serve data off loopback without authentication."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import jsonschema
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client import CollectorRegistry

from phasestream.api import openapi_document
from phasestream.auth import mint_token
from phasestream.consumers import http_app
from phasestream.http import serving
from phasestream.http_auth import HttpAccess
from phasestream.settings import Settings
from tests.conftest import settings_env
from tests.integration.test_api import api, get
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture

pytestmark = pytest.mark.integration
SECRET = "api-test-secret-of-at-least-32-bytes!!"
ISSUER, AUDIENCE = "https://idp.test", "phasestream-api"


async def test_a_configured_secret_makes_every_data_route_need_an_analyst_token(
    seeded: tuple[str, datetime],
) -> None:
    database, _ = seeded
    analyst = mint_token(SECRET, "ann", 300, role="analyst")
    user = mint_token(SECRET, "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f", 300)
    expired = jwt.encode(
        {"sub": "ann", "role": "analyst", "exp": int(time.time()) - 5}, SECRET, algorithm="HS256"
    )
    async with api(database, jwt_secret=SECRET) as session:
        for path in (
            "/api/analytics",
            "/api/sla",
            "/api/rollbacks",
            "/api/workflows/wf-d",
            "/api/workflows",
        ):
            async with session.get(path) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await response.json())["error"] == "missing"
            status, body = await get(session, path, token=analyst)
            assert (status, "items" in body) == (200, True), path
            status, body = await get(session, path, token=user)
            assert (status, body["error"]) == (403, "forbidden"), path
            assert "needs admin or analyst" in body["reason"]
        status, body = await get(session, "/api/sla", token=expired)
        assert (status, body["error"]) == (401, "expired")
        # Never from the URL (it ends up in logs and histories).
        async with session.get("/api/sla", params={"token": analyst}) as response:
            assert response.status == 401
        status, document = await get(session, "/api/openapi.json")
        assert (status, document["openapi"]) == (200, "3.1.0")  # a description, not data


async def test_the_token_command_mints_what_the_api_accepts(
    seeded: tuple[str, datetime], settings: Settings
) -> None:
    database, _ = seeded
    configured = settings.model_copy(
        update={"jwt_secret": SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    )

    async def token(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "phasestream",
            "token",
            *args,
            env=settings_env(configured),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode or 0, out.decode().strip(), err.decode().strip()

    code, analyst, _ = await token("ann", "--role", "analyst")
    assert code == 0
    code, plain, _ = await token("6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f")
    assert code == 0
    code, _, error = await token("ann", "--ttl", str(10**6))
    assert code == 2
    assert error.startswith("error: --ttl: at most PHASESTREAM_JWT_MAX_LIFETIME_S")
    async with api(
        database, jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    ) as session:
        assert (await get(session, "/api/analytics", token=analyst))[0] == 200
        assert (await get(session, "/api/analytics", token=plain))[0] == 403
        # Another issuer's token, same secret: refused.
        other = mint_token(
            SECRET, "ann", 300, role="analyst", issuer="https://other", audience=AUDIENCE
        )
        status, body = await get(session, "/api/analytics", token=other)
        assert (status, body["error"]) == (401, "wrong_issuer")


class IdentityProvider:
    """A JWKS endpoint with one RSA and one EC key; counts its fetches."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.fetches = 0

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key, alg in (("rsa-1", self.rsa, "RS256"), ("ec-1", self.ec, "ES256")):
            algorithm = jwt.get_algorithm_by_name(alg)
            jwk = json.loads(algorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    async def handle(self, _: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(self.jwks())

    def token(self, alg: str, kid: str | None = None, **claims: Any) -> str:
        key, own = (self.rsa, "rsa-1") if alg == "RS256" else (self.ec, "ec-1")
        body = {
            "sub": "ann@example.com",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time()) + 300,
            "roles": ["analyst"],
            **claims,
        }
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid or own})


@contextlib.asynccontextmanager
async def identity_provider() -> AsyncIterator[tuple[IdentityProvider, str]]:
    provider = IdentityProvider()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", provider.handle)
    async with serving(app, "127.0.0.1", 0) as port:
        yield provider, f"http://127.0.0.1:{port}/.well-known/jwks.json"


async def test_identity_provider_tokens_with_issuer_audience_and_cached_keys(
    seeded: tuple[str, datetime],
) -> None:
    database, _ = seeded
    async with (
        identity_provider() as (idp, url),
        api(
            database,
            jwt_jwks_url=url,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_role_claim="roles",
        ) as session,
    ):
        for alg in ("RS256", "ES256"):
            status, body = await get(session, "/api/analytics", token=idp.token(alg))
            assert status == 200, (alg, body)
        assert idp.fetches == 1  # the keys are cached
        refusals = [
            (idp.token("RS256", aud="grafana"), 401, "wrong_audience"),
            (idp.token("ES256", iss="https://evil.test"), 401, "wrong_issuer"),
            (idp.token("RS256", roles=["viewer"]), 403, "forbidden"),
            (idp.token("RS256", exp=int(time.time()) + 7 * 86_400), 401, "too_long"),
            (mint_token(SECRET, "ann", 300, role="analyst"), 401, "bad_algorithm"),
        ]
        for token, code, error in refusals:
            status, body = await get(session, "/api/sla", token=token)
            assert (status, body["error"]) == (code, error)
        # Unknown key ids: at most one refetch per cooldown, however many arrive.
        for n in range(5):
            status, body = await get(session, "/api/sla", token=idp.token("RS256", kid=f"x{n}"))
            assert (status, body["error"]) == (401, "unknown_key")
        assert idp.fetches <= 2


async def test_other_host_headers_are_refused(database: str) -> None:
    async with api(database) as session:
        for host in ("evil.example", "evil.example:6066", "127.0.0.1.nip.io"):
            async with session.get("/api/analytics", headers={"Host": host}) as response:
                assert response.status == 421, host
                assert (await response.json())["error"] == "host_not_allowed"
            async with session.get("/metrics", headers={"Host": host}) as response:
                assert response.status == 421
        for host in ("localhost:6066", "127.0.0.1", "[::1]:80", "LOCALHOST"):
            async with session.get("/api/analytics", headers={"Host": host}) as response:
                assert response.status == 200, host
    async with api(database, http_allowed_hosts="phasestream.internal") as session:
        async with session.get(
            "/api/sla", headers={"Host": "phasestream.internal:6066"}
        ) as response:
            assert response.status == 200
        async with session.get("/api/sla", headers={"Host": "localhost"}) as response:
            assert response.status == 421  # not on this list
        async with session.get("/api/sla") as response:  # 127.0.0.1: the bound address
            assert response.status == 200
        async with session.get("/healthz", headers={"Host": "evil.example"}) as response:
            assert response.status == 200  # probes come by IP; it holds nothing


async def test_oversized_headers_are_refused(database: str) -> None:
    async with (
        api(database) as session,
        session.get("/api/sla", headers={"X-Padding": "x" * 9000}) as response,
    ):
        assert response.status in {400, 431}


@contextlib.asynccontextmanager
async def consumers_app(settings: Settings, address: str) -> AsyncIterator[str]:
    """The HTTP server `phasestream run` builds, with the policy for ``address`` (served on
    loopback: tests never listen beyond it)."""
    access = HttpAccess.from_settings(settings, address=address)
    access.log_mode()
    app = http_app(settings, CollectorRegistry(), access, None)
    async with serving(app, "127.0.0.1", 0) as port:
        yield f"http://127.0.0.1:{port}"


async def test_off_loopback_without_auth_the_api_and_dashboard_are_refused(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    open_anywhere = settings.model_copy(update={"http_allowed_hosts": "*"})
    with caplog.at_level(logging.INFO, logger="phasestream.http_auth"):
        async with (
            consumers_app(open_anywhere, "0.0.0.0") as base,
            aiohttp.ClientSession(base) as session,
        ):
            for path in ("/api/analytics", "/api/sla", "/dashboard"):
                async with session.get(path) as response:
                    assert response.status == 503, path
                    body = await response.json()
                    assert "set PHASESTREAM_JWT_SECRET" in body["reason"]
            async with session.get("/metrics") as response:
                assert response.status == 200
            async with session.get("/healthz") as response:
                assert response.status == 200
    [refusal] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "not serving /api and the dashboard on 0.0.0.0" in refusal.getMessage()
    assert "PHASESTREAM_API_AUTH=off" in refusal.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="phasestream.http_auth"):
        async with (
            consumers_app(open_anywhere.model_copy(update={"api_auth": "off"}), "0.0.0.0") as base,
            aiohttp.ClientSession(base) as session,
        ):
            assert (await get(session, "/api/analytics"))[0] == 200
            async with session.get("/dashboard") as response:
                assert response.status == 200
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("PHASESTREAM_API_AUTH=off")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="phasestream.http_auth"):
        async with (
            consumers_app(settings, "127.0.0.1") as base,
            aiohttp.ClientSession(base) as session,
        ):
            assert (await get(session, "/api/analytics"))[0] == 200
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("/api and the dashboard are open on loopback 127.0.0.1")


async def test_the_openapi_document_describes_every_refusal(database: str) -> None:
    document = openapi_document()
    schema = {
        **document["components"]["schemas"]["AuthError"],
        "components": document["components"],
    }
    user = mint_token(SECRET, "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f", 300)
    data_paths = [p for p in document["paths"] if p != "/api/openapi.json"]
    # analytics, sla, rollbacks, the workflow search, one workflow, running, timeseries, dlq
    assert len(data_paths) == 8
    async with api(database, jwt_secret=SECRET) as session:
        for path in data_paths:
            responses = document["paths"][path]["get"]["responses"]
            for token, status in ((None, 401), ("not-a-jwt", 401), (user, 403)):
                code, body = await get(session, path.replace("{workflow_id}", "wf-d"), token=token)
                assert code == status, (path, token)
                assert str(status) in responses, path
                jsonschema.validate(body, schema)
