"""Sync and async clients for the decision API.

Connections are reused, every call has an explicit timeout, and anything other
than a well-formed answer raises GovernanceUnavailable: the caller never
mistakes silence for permission.

Retries happen only where they cannot change the outcome: a decide request
carries a request id (generated if the caller gave none) and the server answers
a repeated id with the original decision, so retrying a timed-out decide never
creates a second decision. Other calls are retried only when the connection was
never made, i.e. the server cannot have seen them.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from kubewrit.webhook.client.errors import ApiError, GovernanceUnavailable

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 2
BACKOFF_SECONDS = 0.05
# Where an agent pod mounts a ServiceAccount token projected for kubewrit's audience
# (`serviceAccountToken: {audience: kubewrit}`), and the pod's default token after it.
KUBEWRIT_TOKEN = Path("/var/run/secrets/kubewrit/token")
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class Retry(enum.Enum):
    """Which failures a call may be repeated after."""

    NEVER = "never"
    CONNECT = "connect"  # the request never reached the server
    IDEMPOTENT = "idempotent"  # any transport failure or 5xx: repeating changes nothing


class Credentials:
    """A bearer token: explicit, from KUBEWRIT_TOKEN, or a token file re-read when it rotates.

    In Kubernetes the projected ServiceAccount token is rotated by the kubelet;
    the file is re-read whenever its mtime changes, so a long-running agent
    never presents an expired token.
    """

    def __init__(self, token: str | None = None, token_file: str | Path | None = None) -> None:
        self._token = token or os.environ.get("KUBEWRIT_TOKEN")
        file = token_file or os.environ.get("KUBEWRIT_TOKEN_FILE")
        if file is None and self._token is None:
            file = next((f for f in (KUBEWRIT_TOKEN, SERVICE_ACCOUNT_TOKEN) if f.exists()), None)
        self._file = Path(file) if file else None
        self._cached: tuple[float, str] | None = None

    def token(self) -> str:
        if self._token:
            return self._token
        if self._file is None:
            raise GovernanceUnavailable(
                "no_credentials", "no token: pass token=, set KUBEWRIT_TOKEN or KUBEWRIT_TOKEN_FILE"
            )
        try:
            mtime = self._file.stat().st_mtime
            if self._cached is None or self._cached[0] != mtime:
                self._cached = (mtime, self._file.read_text().strip())
        except OSError as exc:
            raise GovernanceUnavailable(
                "no_credentials", f"cannot read token file: {exc}"
            ) from None
        return self._cached[1]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}


def _answer(response: httpx.Response) -> Any:
    """Parse a response; map every failure to an exception with the server's code."""
    if response.status_code >= 500:
        raise GovernanceUnavailable(
            "server_error", f"server answered {response.status_code}", response.status_code
        )
    try:
        body = response.json()
    except ValueError:
        raise GovernanceUnavailable(
            "malformed_response", "server answer is not JSON", response.status_code
        ) from None
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            raise GovernanceUnavailable(
                "malformed_response",
                f"unexpected {response.status_code} answer",
                response.status_code,
            )
        decision = body.get("decision")
        raise ApiError(
            str(error.get("code")),
            str(error.get("message")),
            response.status_code,
            decision if isinstance(decision, dict) else None,
        )
    return body


def _transport_error(url: str, exc: httpx.HTTPError) -> GovernanceUnavailable:
    if isinstance(exc, httpx.TimeoutException):
        return GovernanceUnavailable("timeout", f"no answer from {url} in time: {exc!r}")
    return GovernanceUnavailable("unreachable", f"cannot reach {url}: {exc!r}")


def _may_retry(policy: Retry, exc: Exception) -> bool:
    if policy is Retry.NEVER:
        return False
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    if policy is Retry.IDEMPOTENT:
        return isinstance(exc, httpx.HTTPError) or (
            isinstance(exc, GovernanceUnavailable) and exc.code == "server_error"
        )
    return False


def _backoff(attempt: int) -> float:
    return min(1.0, BACKOFF_SECONDS * (2**attempt))


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def new_request_id() -> str:
    return "req-" + uuid.uuid4().hex


def _decide_body(
    tool: str,
    args: dict[str, Any] | None,
    operation: str | None,
    context: dict[str, Any] | None,
    request_id: str | None,
    agent: str | None,
) -> dict[str, Any]:
    return _params(
        tool=tool,
        args=args or {},
        operation=operation,
        context=context,
        request_id=request_id or new_request_id(),
        agent=agent,
    )


def _timeout(seconds: float) -> httpx.Timeout:
    """A short connect timeout: an unreachable server should fail fast, not at the read limit."""
    return httpx.Timeout(seconds, connect=min(seconds, 2.0))


class _Base:
    def __init__(
        self,
        url: str | None,
        token: str | None,
        token_file: str | Path | None,
        timeout: float,
        retries: int,
    ) -> None:
        self.url = (url or os.environ.get("KUBEWRIT_URL") or DEFAULT_URL).rstrip("/")
        self.credentials = Credentials(token, token_file)
        self.timeout = timeout
        self.retries = retries


class Client(_Base):
    """Blocking client. Use as a context manager, or call close()."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        token_file: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        verify: bool | str = True,
    ) -> None:
        super().__init__(url, token, token_file, timeout, retries)
        self._http = httpx.Client(base_url=self.url, timeout=_timeout(timeout), verify=verify)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        retry: Retry = Retry.CONNECT,
        **kwargs: Any,
    ) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method,
                    path,
                    headers=self.credentials.headers(),
                    timeout=_timeout(timeout or self.timeout),
                    **kwargs,
                )
                return _answer(response)
            except (httpx.HTTPError, GovernanceUnavailable) as exc:
                if attempt >= self.retries or not _may_retry(retry, exc):
                    if isinstance(exc, httpx.HTTPError):
                        raise _transport_error(self.url, exc) from None
                    raise
            time.sleep(_backoff(attempt))
            attempt += 1

    def decide(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        operation: str | None = None,
        context: dict[str, Any] | None = None,
        request_id: str | None = None,
        agent: str | None = None,
    ) -> dict[str, Any]:
        body = _decide_body(tool, args, operation, context, request_id, agent)
        return dict(self._call("POST", "/v1/decide", json=body, retry=Retry.IDEMPOTENT))

    def approval(self, approval_id: str, wait: float = 0) -> dict[str, Any]:
        return dict(
            self._call(
                "GET",
                f"/v1/approvals/{approval_id}",
                params=_params(wait=wait or None),
                timeout=self.timeout + wait,
            )
        )

    def list_approvals(self, phase: str | None = None) -> list[dict[str, Any]]:
        return list(
            self._call("GET", "/v1/approvals", params=_params(phase=phase), retry=Retry.IDEMPOTENT)
        )

    def approve(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        return dict(
            self._call("POST", f"/v1/approvals/{approval_id}/approve", json=_params(reason=reason))
        )

    def deny(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        return dict(
            self._call("POST", f"/v1/approvals/{approval_id}/deny", json=_params(reason=reason))
        )

    def records(self, **filters: Any) -> dict[str, Any]:
        return dict(
            self._call("GET", "/v1/records", params=_params(**filters), retry=Retry.IDEMPOTENT)
        )

    def limits(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/limits", retry=Retry.IDEMPOTENT))


class AsyncClient(_Base):
    """The same API for event loops. Bound to the loop it is first used on (httpx's rule)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        token_file: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        verify: bool | str = True,
    ) -> None:
        super().__init__(url, token, token_file, timeout, retries)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=_timeout(timeout), verify=verify)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        retry: Retry = Retry.CONNECT,
        **kwargs: Any,
    ) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method,
                    path,
                    headers=self.credentials.headers(),
                    timeout=_timeout(timeout or self.timeout),
                    **kwargs,
                )
                return _answer(response)
            except (httpx.HTTPError, GovernanceUnavailable) as exc:
                if attempt >= self.retries or not _may_retry(retry, exc):
                    if isinstance(exc, httpx.HTTPError):
                        raise _transport_error(self.url, exc) from None
                    raise
            await asyncio.sleep(_backoff(attempt))
            attempt += 1

    async def decide(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        operation: str | None = None,
        context: dict[str, Any] | None = None,
        request_id: str | None = None,
        agent: str | None = None,
    ) -> dict[str, Any]:
        body = _decide_body(tool, args, operation, context, request_id, agent)
        return dict(await self._call("POST", "/v1/decide", json=body, retry=Retry.IDEMPOTENT))

    async def approval(self, approval_id: str, wait: float = 0) -> dict[str, Any]:
        return dict(
            await self._call(
                "GET",
                f"/v1/approvals/{approval_id}",
                params=_params(wait=wait or None),
                timeout=self.timeout + wait,
            )
        )

    async def list_approvals(self, phase: str | None = None) -> list[dict[str, Any]]:
        return list(
            await self._call(
                "GET", "/v1/approvals", params=_params(phase=phase), retry=Retry.IDEMPOTENT
            )
        )

    async def approve(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        return dict(
            await self._call(
                "POST", f"/v1/approvals/{approval_id}/approve", json=_params(reason=reason)
            )
        )

    async def deny(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        return dict(
            await self._call(
                "POST", f"/v1/approvals/{approval_id}/deny", json=_params(reason=reason)
            )
        )

    async def records(self, **filters: Any) -> dict[str, Any]:
        return dict(
            await self._call(
                "GET", "/v1/records", params=_params(**filters), retry=Retry.IDEMPOTENT
            )
        )
