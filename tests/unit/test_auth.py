"""Tokens: minted and checked (HS256 with our secret, RS256/ES256 keys of a provider)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from phasestream.auth import TokenRefusedError, TokenVerifier, bearer, mint_token
from phasestream.http_auth import ApiMode, HttpAccess, host_name, is_loopback, token_verifier
from phasestream.settings import Settings

SECRET = "unit-test-secret-of-at-least-32-bytes!"
USER = uuid.UUID("6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f")
LATER = 2**31


def verifier(secret: str | None = SECRET, **options: Any) -> TokenVerifier:
    defaults: dict[str, Any] = {
        "jwks_url": None,
        "issuer": None,
        "audience": None,
        "max_lifetime_s": 86_400,
        "role_claim": "role",
    }
    return TokenVerifier(secret=secret, **{**defaults, **options})


def forged(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_a_minted_token_names_its_user_role_and_expiry() -> None:
    before = time.time()
    principal = await verifier().verify(mint_token(SECRET, str(USER).upper(), 60, role="analyst"))
    assert principal.subject == str(USER)  # canonical: tokens may carry an upper-case UUID
    assert principal.roles == {"analyst"}
    assert before + 59 <= principal.expires_at <= time.time() + 61
    plain = await verifier().verify(mint_token(SECRET, "u", 60))
    assert plain.roles == frozenset()
    listed = await verifier(role_claim="groups").verify(
        forged({"sub": "u", "exp": int(time.time()) + 60, "groups": ["analyst", 3, "x"]})
    )
    assert listed.roles == {"analyst", "x"}


IN_A_MINUTE, IN_A_DAY_AND_AN_HOUR = 60, 86_400 + 3600


@pytest.mark.parametrize(
    ("secret", "claims", "code"),
    [
        (None, "x", "not_configured"),
        (SECRET, None, "missing"),
        (SECRET, "", "missing"),
        (SECRET, "not-a-jwt", "invalid"),
        (
            SECRET,
            ({"sub": "u", "exp": LATER}, "another-secret-of-at-least-32-bytes"),
            "bad_signature",
        ),
        (SECRET, {"sub": "u", "exp": 1}, "expired"),
        (SECRET, {"sub": "u"}, "invalid"),
        (SECRET, {"exp": LATER}, "no_subject"),
        (SECRET, {"sub": "", "exp": IN_A_MINUTE}, "no_subject"),
        (SECRET, {"sub": "u", "exp": IN_A_DAY_AND_AN_HOUR}, "too_long"),
        (SECRET, ({"sub": "u", "exp": LATER}, "none"), "bad_algorithm"),
    ],
)
async def test_tokens_are_refused_with_a_reason(secret: str | None, claims: Any, code: str) -> None:
    with pytest.raises(TokenRefusedError) as refused:
        await verifier(secret).verify(token_of(claims))
    assert refused.value.code == code
    assert refused.value.reason
    assert refused.value.status == 401


def token_of(claims: Any) -> str | None:
    """A token made now (the parameters are made at collection, maybe minutes before):
    a string as it is; claims signed with SECRET, or (claims, other key or "none")."""
    if claims is None or isinstance(claims, str):
        return claims
    body, key = claims if isinstance(claims, tuple) else (claims, SECRET)
    now = int(time.time())
    if body.get("exp") in {IN_A_MINUTE, IN_A_DAY_AND_AN_HOUR}:
        body = {**body, "exp": now + body["exp"]}
    if key == "none":
        return jwt.encode(body, "", algorithm="none")
    return forged(body, key)


async def test_issuer_and_audience_are_checked_when_configured() -> None:
    strict = verifier(issuer="https://idp.example", audience="phasestream")
    now = int(time.time())
    good = mint_token(SECRET, "u", 60, issuer="https://idp.example", audience="phasestream")
    assert (await strict.verify(good)).subject == "u"
    for claims, code in [
        ({"iss": "https://evil.example", "aud": "phasestream"}, "wrong_issuer"),
        ({"iss": "https://idp.example", "aud": "grafana"}, "wrong_audience"),
        ({"aud": "phasestream"}, "invalid"),
        ({"iss": "https://idp.example"}, "invalid"),
    ]:
        with pytest.raises(TokenRefusedError) as refused:
            await strict.verify(forged({"sub": "u", "exp": now + 60, **claims}))
        assert refused.value.code == code, claims
    # A token meant for some audience is not taken where none is configured.
    with pytest.raises(TokenRefusedError) as refused:
        await verifier().verify(forged({"sub": "u", "exp": now + 60, "aud": "grafana"}))
    assert refused.value.code == "wrong_audience"


async def test_an_asymmetric_token_needs_a_jwks_url_and_hs256_needs_the_secret() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs256 = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, key, algorithm="RS256")
    with pytest.raises(TokenRefusedError) as refused:
        await verifier().verify(rs256)
    assert refused.value.code == "bad_algorithm"
    # Only a provider configured: our own HS256 tokens are not accepted (no secret to check).
    only_idp = verifier(None, jwks_url="http://127.0.0.1:1/jwks")
    with pytest.raises(TokenRefusedError) as refused:
        await only_idp.verify(mint_token(SECRET, "u", 60))
    assert refused.value.code == "bad_algorithm"
    # A provider that cannot be reached: 503, not "your token is bad".
    es256 = jwt.encode(
        {"sub": "u", "exp": int(time.time()) + 60},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    with pytest.raises(TokenRefusedError) as refused:
        await only_idp.verify(es256)
    assert (refused.value.code, refused.value.status) == ("keys_unavailable", 503)


def test_a_jwt_secret_shorter_than_32_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Settings(jwt_secret="too-short")
    assert Settings(jwt_secret="x" * 32).jwt_secret is not None


@pytest.mark.parametrize(
    ("host", "secret", "auth", "mode"),
    [
        ("127.0.0.1", None, "auto", ApiMode.OPEN),
        ("::1", None, "auto", ApiMode.OPEN),
        ("localhost", None, "auto", ApiMode.OPEN),
        ("0.0.0.0", None, "auto", ApiMode.REFUSED),
        ("10.1.2.3", None, "auto", ApiMode.REFUSED),
        ("0.0.0.0", None, "off", ApiMode.OFF),
        ("127.0.0.1", SECRET, "auto", ApiMode.REQUIRED),
        ("0.0.0.0", SECRET, "auto", ApiMode.REQUIRED),
    ],
)
def test_the_api_mode_follows_the_address_and_settings(
    host: str, secret: str | None, auth: str, mode: ApiMode
) -> None:
    settings = Settings(http_host=host, jwt_secret=secret, api_auth=auth)
    assert HttpAccess.from_settings(settings).mode is mode


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:6066", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("[::1]:6066", "::1"),
        ("localhost.:80", "localhost"),
        ("evil.example:6066", "evil.example"),
        ("::1", "::1"),
    ],
)
def test_host_names_are_read_without_their_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_loopback_addresses() -> None:
    assert [
        is_loopback(a)
        for a in (
            "127.0.0.1",
            "127.8.0.1",
            "[::1]",
            "localhost",
            "0.0.0.0",
            "::",
            "192.168.1.1",
            "example.com",
        )
    ] == [True, True, True, True, False, False, False, False]


def test_the_bound_address_is_an_allowed_host_unless_a_wildcard() -> None:
    bound = HttpAccess.from_settings(Settings(http_host="10.1.2.3", jwt_secret=SECRET))
    assert bound.host_allowed("10.1.2.3:6066")
    assert bound.host_allowed("localhost:6066")
    assert not bound.host_allowed("evil.example:6066")
    anywhere = HttpAccess.from_settings(Settings(http_host="0.0.0.0", jwt_secret=SECRET))
    assert not anywhere.host_allowed("0.0.0.0")
    assert not anywhere.host_allowed("phasestream.internal")
    listed = Settings(http_host="0.0.0.0", http_allowed_hosts="*", jwt_secret=SECRET)
    assert HttpAccess.from_settings(listed).host_allowed("phasestream.internal")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer  abc.def ", "abc.def"),  # the scheme is case-insensitive (RFC 7235)
        ("Bearer ", None),
        ("Basic dXNlcjpwdw==", None),
        ("", None),
    ],
)
def test_the_bearer_token_is_read_from_the_authorization_header(
    header: str, token: str | None
) -> None:
    assert bearer(header) == token


async def test_the_settings_verifier_checks_with_the_configured_secret() -> None:
    configured = token_verifier(Settings(jwt_secret=SECRET, jwt_role_claim="groups"))
    claims = {"sub": str(USER), "exp": int(time.time()) + 60, "groups": "ops"}
    principal = await configured.verify(forged(claims))
    assert (principal.subject, principal.roles) == (str(USER), frozenset({"ops"}))
    assert not token_verifier(Settings()).configured
