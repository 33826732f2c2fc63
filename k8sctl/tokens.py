"""Service-account tokens read locally: claims only, never verified, never shown."""
from __future__ import annotations

import base64
import binascii
import json
import time


def jwt_claims(token: str) -> dict | None:
    """The claims of a JWT (signature not checked), or None when `token` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def expires_at(token: str) -> float | None:
    """`exp` of a JWT as a Unix time; None for tokens that never expire (legacy token Secrets)."""
    claims = jwt_claims(token) or {}
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, (int, float)) else None


def fresh_for_reuse(token: str, subject: str, now: float | None = None) -> bool:
    """Whether a bound token for `subject` still has more than half its lifetime left.

    A TokenRequest token is kept until then, so re-running create-clientconfig does not
    rewrite the Secret (and restart the operator) every time.
    """
    claims = jwt_claims(token) or {}
    exp, iat = claims.get("exp"), claims.get("iat")
    if claims.get("sub") != subject or not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
        return False
    now = time.time() if now is None else now
    return exp - now > (exp - iat) / 2
