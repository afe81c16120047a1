"""Label Studio's two kinds of API token, told apart without asking, and the header each is sent with.

- A **Personal Access Token** (Label Studio 1.23's default; *Account & Settings → Personal Access Token*) is a
  JWT *refresh* token: three base64url parts whose payload has ``"token_type": "refresh"``. It is not sent
  itself: it is exchanged at ``POST /api/token/refresh/`` for a short-lived *access* token (minutes), sent as
  ``Authorization: Bearer <access>``, renewed shortly before it expires and whenever a request answers 401.
- A **legacy token** (40 hex characters; *Account & Settings → Legacy Token*, shown only when an organisation
  admin enabled legacy tokens under *Organization → API Tokens Settings*) is sent as ``Authorization: Token``.
- A JWT *access* token (what a script may already hold) is sent as ``Bearer`` as it is, and not renewed.

The payload is decoded without checking the signature (only the server can); it only chooses the header.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable

PAT = "Personal Access Token"
LEGACY = "legacy API token"
ACCESS = "JWT access token"

# Renew the access token this many seconds before its ``exp`` (clock skew, slow requests).
RENEW_MARGIN_S = 30.0

WHERE_PAT = (
    "make a new one in Label Studio under Account & Settings → Personal Access Token "
    "(/user/account/personal-access-token)"
)
WHERE_LEGACY = (
    "make a new one in Label Studio under Account & Settings → Legacy Token (an organisation admin must "
    "enable legacy tokens under Organization → API Tokens Settings), or use a Personal Access Token"
)


def jwt_claims(token: str) -> dict | None:
    """The payload of a JWT (signature unchecked), or ``None`` when ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def token_kind(token: str) -> str:
    """:data:`PAT`, :data:`ACCESS` or :data:`LEGACY`, from the token's form alone."""
    claims = jwt_claims(token.strip())
    if claims is None:
        return LEGACY
    return ACCESS if claims.get("token_type") == "access" else PAT


def refused_message(kind: str, detail: str) -> str:
    """The one line for a token Label Studio refused: its kind, Label Studio's reason and the fix."""
    where = WHERE_LEGACY if kind == LEGACY else WHERE_PAT
    reason = f" ({detail})" if detail else ""
    return f"Label Studio refused the {kind}{reason}: it is wrong, revoked or expired; {where}"


class TokenAuth:
    """The ``Authorization`` header for one token, with a Personal Access Token's access token cached.

    Args:
        token: the token as the person gave it (either kind).
        exchange: ``exchange(refresh_token) -> access_token``, a call to ``/api/token/refresh/``; it raises
            the client's error when Label Studio refuses.
        clock: seconds since the epoch (tests move it).

    Thread-safe: the backend fetches images from several threads; one exchange at a time.
    """

    def __init__(self, token: str, exchange: Callable[[str], str], clock: Callable[[], float] = time.time):
        self.token = token.strip()
        self.kind = token_kind(self.token)
        self._exchange, self._clock = exchange, clock
        self._access: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def expired_locally(self) -> bool:
        """A Personal Access Token whose own ``exp`` has passed (Label Studio would refuse it)."""
        exp = (jwt_claims(self.token) or {}).get("exp") if self.kind == PAT else None
        return isinstance(exp, int | float) and exp < self._clock()

    def header(self, renew: bool = False) -> str:
        """``Token <legacy>`` or ``Bearer <access>``; ``renew`` forces a new access token (after a 401)."""
        if self.kind == LEGACY:
            return f"Token {self.token}"
        if self.kind == ACCESS:
            return f"Bearer {self.token}"
        with self._lock:
            if renew or self._access is None or self._clock() > self._expires - RENEW_MARGIN_S:
                access = self._exchange(self.token)
                exp = (jwt_claims(access) or {}).get("exp")
                self._access = access
                # Without an exp claim: renew after a minute (Label Studio's access tokens last 5 minutes).
                self._expires = float(exp) if isinstance(exp, int | float) else self._clock() + 60.0
            return f"Bearer {self._access}"
