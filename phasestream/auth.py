"""Bearer tokens: who is asking, until when, and with which role.

Two kinds are accepted, told apart by the algorithm in their header: HS256 tokens signed
with ``PHASESTREAM_JWT_SECRET`` (``phasestream token`` mints them) and an identity
provider's RS256/ES256 tokens, checked against the keys at ``PHASESTREAM_JWT_JWKS_URL``
(cached; a token naming an unknown key refetches them at most once per cooldown, so a
stranger cannot make us hammer the provider). Every token needs ``sub`` and ``exp``, may
not be valid for longer than the configured lifetime, and must carry the configured
``iss`` and ``aud`` when those are set.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

import jwt

from models.errors import PhasestreamError

HS256: Final = "HS256"
IDP_ALGORITHMS: Final = ("RS256", "ES256")
JWKS_TIMEOUT_S: Final = 5.0
JWKS_CACHE_S: Final = 300.0
JWKS_COOLDOWN_S: Final = 30.0
#: Clocks differ: a token minted for exactly the longest lifetime must still pass.
LIFETIME_LEEWAY_S: Final = 60
#: The answer to a request without a usable token (RFC 6750).
CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="phasestream"'}


class TokenRefusedError(PhasestreamError):
    """No access. ``code`` is short and bounded (a metric label); ``reason`` is for people;
    ``status`` is the HTTP answer (401: who are you? 403: not you; 503: cannot check now)."""

    def __init__(self, code: str, reason: str, status: int = 401) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # canonical (see canonical_user_id)
    roles: frozenset[str]
    expires_at: float  # Unix seconds


def canonical_user_id(text: str) -> str:
    """A UUID in its canonical form (so `ABC…` and `abc…` are one user); anything else as is."""
    try:
        return str(UUID(text))
    except ValueError:
        return text


def bearer(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def mint_token(
    secret: str,
    subject: str,
    ttl_s: int,
    *,
    role: str | None = None,
    role_claim: str = "role",
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """An HS256 token for ``subject``, valid for ``ttl_s`` seconds from now."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    if not subject:
        raise ValueError("the subject must not be empty")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_s}
    optional = {role_claim: role, "iss": issuer, "aud": audience}
    claims.update({name: value for name, value in optional.items() if value is not None})
    return jwt.encode(claims, secret, algorithm=HS256)


class TokenVerifier:
    """Checks tokens as the settings say; ``configured`` is False when it has no key."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None,
        max_lifetime_s: int,
        role_claim: str,
    ) -> None:
        self._secret = secret
        self._jwks = (
            None
            if jwks_url is None
            else jwt.PyJWKClient(
                jwks_url,
                cache_keys=True,
                lifespan=JWKS_CACHE_S,
                timeout=JWKS_TIMEOUT_S,
                cooldown_duration=JWKS_COOLDOWN_S,
            )
        )
        self._jwks_lock = asyncio.Lock()
        self._issuer = issuer
        self._audience = audience
        self._max_lifetime_s = max_lifetime_s
        self._role_claim = role_claim

    @property
    def configured(self) -> bool:
        return self._secret is not None or self._jwks is not None

    async def verify(self, token: str | None) -> Principal:
        """The principal ``token`` names, or TokenRefusedError saying why not."""
        if not self.configured:
            raise TokenRefusedError("not_configured", "no token secret or JWKS URL is configured")
        if not token:
            raise TokenRefusedError(
                "missing", "a token is required: 'Authorization: Bearer <token>'"
            )
        claims = _decode(
            token, *await self._key(token), issuer=self._issuer, audience=self._audience
        )
        return self._principal(claims)

    async def _key(self, token: str) -> tuple[Any, str]:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as exc:
            raise TokenRefusedError("invalid", f"the token is not a JWT: {exc}") from None
        if algorithm == HS256 and self._secret is not None:
            return self._secret, HS256
        if algorithm in IDP_ALGORITHMS and self._jwks is not None:
            return await self._signing_key(self._jwks, token), str(algorithm)
        accepted = ([HS256] if self._secret else []) + (list(IDP_ALGORITHMS) if self._jwks else [])
        raise TokenRefusedError(
            "bad_algorithm",
            f"tokens signed with {algorithm!r} are not accepted here (only {', '.join(accepted)})",
        )

    async def _signing_key(self, client: jwt.PyJWKClient, token: str) -> Any:
        try:
            # PyJWKClient fetches with urllib: in a thread, one at a time (the cache is shared).
            async with self._jwks_lock:
                return (await asyncio.to_thread(client.get_signing_key_from_jwt, token)).key
        except jwt.PyJWKClientConnectionError:
            raise TokenRefusedError(
                "keys_unavailable",
                "the identity provider's keys "
                "(PHASESTREAM_JWT_JWKS_URL) cannot be fetched now; "
                "try again",
                status=503,
            ) from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise TokenRefusedError(
                "unknown_key", f"the token's key is not among the identity provider's: {exc}"
            ) from None

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenRefusedError("no_subject", "the token names no user (claim 'sub')")
        expires_at = claims["exp"]
        if not isinstance(expires_at, int | float):  # PyJWT has checked; this tells mypy
            raise TokenRefusedError("invalid", "the token's 'exp' is not a number")
        if expires_at - time.time() > self._max_lifetime_s + LIFETIME_LEEWAY_S:
            raise TokenRefusedError(
                "too_long",
                f"the token is valid for more than "
                f"{self._max_lifetime_s} s (PHASESTREAM_JWT_MAX_LIFETIME_S)",
            )
        return Principal(
            canonical_user_id(subject), _roles(claims.get(self._role_claim)), float(expires_at)
        )


def _roles(value: object) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def _decode(
    token: str, key: Any, algorithm: str, *, issuer: str | None, audience: str | None
) -> dict[str, Any]:
    required = ["exp", "sub"] + (["iss"] if issuer else []) + (["aud"] if audience else [])
    # PyJWT checks the signature before the claims: a forged token is never "expired".
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            audience=audience,
            options={"require": required},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefusedError("expired", "the token has expired") from None
    except jwt.InvalidSignatureError:
        raise TokenRefusedError("bad_signature", "the token's signature is not valid") from None
    except jwt.MissingRequiredClaimError as exc:
        code = "no_subject" if exc.claim == "sub" else "invalid"
        raise TokenRefusedError(code, f"the token has no '{exc.claim}' claim") from None
    except jwt.InvalidIssuerError:
        raise TokenRefusedError("wrong_issuer", f"the token's issuer is not {issuer!r}") from None
    except jwt.InvalidAudienceError:
        raise TokenRefusedError(
            "wrong_audience",
            f"the token is not for this audience ({audience or 'none configured'})",
        ) from None
    except jwt.InvalidTokenError as exc:
        raise TokenRefusedError("invalid", f"the token is not valid: {exc}") from None
    return claims
