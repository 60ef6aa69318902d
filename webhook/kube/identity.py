"""Agents authenticate with their ServiceAccount token, checked by TokenReview and cached briefly.

The cache is why the webhook could be more permissive than the API server: a token the
API server stops accepting (its ServiceAccount deleted, the token expired) keeps deciding
until its cached review lapses. So a review is cached for at most `ttl` seconds (5 by
default) and never past the token's own `exp`: the webhook trusts a token at most `ttl`
seconds longer than the API server does. Tokens must be minted for this webhook's
audience (`kubectl create token SA --audience kubewrit`, or a projected volume with
`audience: kubewrit`): a token made for another service is not accepted here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
import time
from dataclasses import replace

from kubernetes import client
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.kube.api import SERVICE_ACCOUNT_PREFIX

log = logging.getLogger(__name__)

DEFAULT_AUDIENCE = "kubewrit"
DEFAULT_TTL_SECONDS = 5.0
MAX_CACHED = 10000


def token_expiry(token: str) -> float | None:
    """The `exp` claim (seconds since the epoch) of a JWT, unverified; None if it has none.

    Only ever used to shorten a cache entry the API server's TokenReview already vouched
    for, so reading it unverified can never make a token more trusted.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class ReviewUnavailable(Exception):
    """The API server could not be asked (down, unreachable, overloaded)."""


class TokenReviewAuthenticator:
    """ServiceAccounts are agents (named by SA, scoped to their namespace); nobody else is served."""

    def __init__(
        self,
        api: client.ApiClient,
        ttl: float = DEFAULT_TTL_SECONDS,
        negative_ttl: float = 5.0,
        audiences: list[str] | None = None,
    ) -> None:
        self.api = client.AuthenticationV1Api(api)
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.audiences = audiences if audiences is not None else [DEFAULT_AUDIENCE]
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # Each token's last confirmed identity, until the token's own expiry: used, marked
        # unverified, only while the API server cannot be asked (see `authenticate`).
        self._confirmed: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def recall(self, token: str) -> Principal | None:
        """The principal of a review still cached; None if none is (or it said no)."""
        with self._lock:
            cached = self._cache.get(self._key(token))
        return cached[1] if cached and cached[0] > time.monotonic() else None

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def authenticate(self, token: str) -> Principal | None:
        key = self._key(token)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached and cached[0] > now:
            return cached[1]
        expiry = token_expiry(token)
        try:
            principal = self._review(token)
        except ReviewUnavailable:
            return self._last_confirmed(key)
        if principal is not None:
            with self._lock:
                self._confirmed[key] = (expiry or time.time() + self.ttl, principal)
        lifetime = self.ttl if principal else self.negative_ttl
        if principal and expiry is not None:
            lifetime = min(lifetime, expiry - time.time())
        with self._lock:
            if len(self._cache) > MAX_CACHED:
                self._cache.clear()
            if lifetime > 0:
                self._cache[key] = (now + lifetime, principal)
            else:
                self._cache.pop(key, None)
        return principal

    def _last_confirmed(self, key: str) -> Principal | None:
        """While TokenReview cannot be reached: who the API server last said this token is.

        Marked unverified, so it can only be told DENY (recorded if the store is reachable,
        `record_unavailable` if not) and never permitted: an outage makes answers
        attributable, not permissive. A token never reviewed, or past its expiry, is refused.
        """
        with self._lock:
            if len(self._confirmed) > MAX_CACHED:
                self._confirmed.clear()
            confirmed = self._confirmed.get(key)
        if confirmed is None or confirmed[0] <= time.time():
            return None
        return replace(confirmed[1], verified=False)

    def _review(self, token: str) -> Principal | None:
        review = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=self.audiences or None)
        )
        try:
            result = self.api.create_token_review(review)
        except Exception as exc:  # the API server cannot answer: nothing is cached
            log.warning("TokenReview failed: %s", exc)
            raise ReviewUnavailable(str(exc)) from exc
        status = result.status
        if not status or not status.authenticated or not status.user:
            return None
        if self.audiences and not set(status.audiences or ()) & set(self.audiences):
            return None  # the API server did not confirm the token is meant for us
        username = status.user.username or ""
        groups = tuple(status.user.groups or ())
        if username.startswith(SERVICE_ACCOUNT_PREFIX):
            namespace, _, name = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
            return Principal(name, Role.AGENT, groups, namespace)
        # People decide approvals with kubectl (or `kubewrit console`), where the API server
        # and the operator's webhooks authenticate, stamp and check them; the webhook's own
        # API serves ServiceAccounts only, so a person's token cannot approve around them.
        log.info("TokenReview: %s is not a ServiceAccount; not served here", username)
        return None
