"""The signed tokens /ws accepts: HS256 JWTs whose subject is the user id."""

from __future__ import annotations

import time
from typing import Final
from uuid import UUID

import jwt

from models.errors import PhasestreamError

ALGORITHM: Final = "HS256"


class TokenRefusedError(PhasestreamError):
    """No access. ``code`` is short and bounded (a metric label); ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def canonical_user_id(text: str) -> str:
    """A UUID in its canonical form (so `ABC…` and `abc…` are one user); anything else as is."""
    try:
        return str(UUID(text))
    except ValueError:
        return text


def mint_token(secret: str, user_id: str, ttl_s: int) -> str:
    """A token for ``user_id``, valid for ``ttl_s`` seconds from now."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    if not user_id:
        raise ValueError("user_id must not be empty")
    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + ttl_s}, secret,
                      algorithm=ALGORITHM)


def verify_token(secret: str | None, token: str | None) -> tuple[str, float]:
    """The user id a token names (canonical) and when it expires (Unix seconds), or
    TokenRefusedError saying why not."""
    if not secret:
        raise TokenRefusedError("not_configured", "no token secret is configured")
    if not token:
        raise TokenRefusedError("missing", "a token is required: 'Authorization: Bearer "
                                           "<token>' or '?token=<token>'")
    claims = _decode(secret, token)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenRefusedError("no_subject", "the token names no user (claim 'sub')")
    expires_at = claims["exp"]
    if not isinstance(expires_at, int | float):  # PyJWT has checked; this tells mypy
        raise TokenRefusedError("invalid", "the token's 'exp' is not a number")
    return canonical_user_id(subject), float(expires_at)


def _decode(secret: str, token: str) -> dict[str, object]:
    # PyJWT checks the signature before the claims: a forged token is never "expired".
    try:
        claims: dict[str, object] = jwt.decode(token, secret, algorithms=[ALGORITHM],
                                               options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise TokenRefusedError("expired", "the token has expired") from None
    except jwt.InvalidSignatureError:
        raise TokenRefusedError("bad_signature", "the token's signature is not valid") from None
    except jwt.MissingRequiredClaimError as exc:
        code = "no_subject" if exc.claim == "sub" else "invalid"
        raise TokenRefusedError(code, f"the token has no '{exc.claim}' claim") from None
    except jwt.InvalidTokenError as exc:
        raise TokenRefusedError("invalid", f"the token is not valid: {exc}") from None
    return claims
