"""Agents authenticate with their ServiceAccount token, checked by TokenReview and cached briefly."""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from kubernetes import client
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.kube.api import SERVICE_ACCOUNT_PREFIX

log = logging.getLogger(__name__)


class TokenReviewAuthenticator:
    """ServiceAccounts are agents (named by SA, scoped to their namespace); nobody else is served."""

    def __init__(
        self,
        api: client.ApiClient,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        audiences: list[str] | None = None,
    ) -> None:
        self.api = client.AuthenticationV1Api(api)
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.audiences = audiences
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached and cached[0] > now:
            return cached[1]
        principal = self._review(token)
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[key] = (now + (self.ttl if principal else self.negative_ttl), principal)
        return principal

    def _review(self, token: str) -> Principal | None:
        review = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=self.audiences)
        )
        try:
            result = self.api.create_token_review(review)
        except Exception as exc:  # the API server is unreachable: nobody is authenticated
            log.warning("TokenReview failed: %s", exc)
            return None
        status = result.status
        if not status or not status.authenticated or not status.user:
            return None
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
