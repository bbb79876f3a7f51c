"""Optional bearer-token authentication (PREDICT_API_TOKEN, RFC 6750).

Only the routes that serve predictions or reveal the model and the traffic need the token.
/health and /ready stay open for orchestrators' probes, and /openapi.json stays open because it
is how a client learns that a token is needed (it holds no secret, only the request shapes).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

REALM = "nyctaxi-predict"
PROTECTED_ROUTES = frozenset({"/predict", "/model", "/metrics"})
SECURITY_SCHEME = "bearerAuth"


@dataclass(frozen=True)
class AuthFailure:
    problem: str
    invalid_token: bool  # a token was sent and is wrong (RFC 6750 error="invalid_token")

    def challenge(self) -> str:
        """The WWW-Authenticate header value."""
        value = f'Bearer realm="{REALM}"'
        return f'{value}, error="invalid_token"' if self.invalid_token else value


def _digest(token: bytes) -> bytes:
    # Comparing fixed-length digests: compare_digest on the raw values would reveal the length.
    return hashlib.sha256(token).digest()


class BearerCheck:
    """Checks an Authorization header against the configured token; never keeps it in text."""

    def __init__(self, token: str) -> None:
        self._expected = _digest(token.encode("utf-8"))

    def check(self, header: str | None) -> AuthFailure | None:
        """None when the header carries the token; otherwise why not (without echoing it)."""
        if not header:
            return AuthFailure("send the header Authorization: Bearer <token>", False)
        scheme, _, sent = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return AuthFailure("the Authorization scheme must be Bearer", False)
        # WSGI header values are latin-1 decoded bytes: encoding back gives the bytes sent.
        sent_bytes = sent.strip().encode("latin-1", errors="replace")
        if not hmac.compare_digest(_digest(sent_bytes), self._expected):
            return AuthFailure("the bearer token is not valid", True)
        return None
