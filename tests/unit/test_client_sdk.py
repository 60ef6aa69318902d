"""The client's failure handling, against scripted transports: fail closed, retry only safely."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubewrit.webhook.client import (
    ActionDenied,
    ApiError,
    AsyncClient,
    Client,
    Credentials,
    GovernanceUnavailable,
    Governor,
)
from kubewrit.webhook.client.http import Retry


def scripted(*answers: Any) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that plays `answers` in order: a Response, or an exception to raise."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


def client_with(transport: httpx.MockTransport, **options: Any) -> Client:
    client = Client("http://kubewrit.test", "tok", **options)
    client._http = httpx.Client(base_url=client.url, transport=transport)
    return client


PERMIT_BODY = {
    "decision": "DENY",
    "reason": "default_deny",
    "message": "no rule",
    "rule_id": "default-deny",
    "risk": "low",
    "policy_hash": "x",
    "action_hash": "sha256:00",
    "record": {"chain": "c", "seq": 3, "hash": "h"},
}


def test_decide_retries_with_the_same_request_id() -> None:
    transport, seen = scripted(
        httpx.ReadTimeout("slow"),
        httpx.Response(503, json={}),
        httpx.Response(200, json=PERMIT_BODY),
    )
    client = client_with(transport)
    assert client.decide("t", {"a": 1})["decision"] == "DENY"
    ids = {json.loads(r.content)["request_id"] for r in seen}
    assert len(seen) == 3 and len(ids) == 1


def test_explicit_request_id_is_kept() -> None:
    transport, seen = scripted(httpx.Response(200, json=PERMIT_BODY))
    client_with(transport).decide("t", {}, request_id="mine")
    assert json.loads(seen[0].content)["request_id"] == "mine"


def test_approve_is_not_retried_after_the_request_may_have_arrived() -> None:
    transport, seen = scripted(httpx.ReadTimeout("slow"), httpx.Response(200, json={}))
    with pytest.raises(GovernanceUnavailable) as err:
        client_with(transport).approve("apr-1")
    assert err.value.code == "timeout" and len(seen) == 1


def test_connect_errors_are_retried_for_any_call() -> None:
    transport, seen = scripted(httpx.ConnectError("refused"), httpx.Response(200, json={"id": 1}))
    assert client_with(transport).approve("apr-1") == {"id": 1}
    assert len(seen) == 2


def test_retries_are_bounded() -> None:
    transport, seen = scripted(*[httpx.ConnectError("refused")] * 5)
    with pytest.raises(GovernanceUnavailable) as err:
        client_with(transport, retries=2).decide("t", {})
    assert err.value.code == "unreachable" and len(seen) == 3


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(500, text="boom"), "server_error"),
        (httpx.Response(200, text="not json"), "malformed_response"),
        (httpx.Response(400, json=["no error object"]), "malformed_response"),
    ],
)
def test_bad_answers_fail_closed(response: httpx.Response, code: str) -> None:
    transport, _ = scripted(response, response, response)
    with pytest.raises(GovernanceUnavailable) as err:
        client_with(transport).decide("t", {})
    assert err.value.code == code


def test_api_errors_carry_code_and_decision() -> None:
    body = {"error": {"code": "identity_mismatch", "message": "no"}, "decision": PERMIT_BODY}
    transport, _ = scripted(httpx.Response(403, json=body))
    with pytest.raises(ApiError) as err:
        client_with(transport).decide("t", {})
    assert err.value.code == "identity_mismatch" and err.value.record_ref == "c/3"


def governor_with(*answers: Any) -> Governor:
    transport, _ = scripted(*answers)
    return Governor(client=client_with(transport, retries=0), agent="a")


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "MAYBE", "action_hash": "x"},
        {"decision": "PERMIT", "action_hash": "x"},  # no writ
        {"decision": "DEFER", "action_hash": "x"},  # no approval
        {"decision": "PERMIT", "action_hash": "x", "writ": "not-a-jwt"},
    ],
)
def test_governor_never_runs_on_a_malformed_answer(body: dict[str, Any]) -> None:
    ran = []
    with pytest.raises((GovernanceUnavailable, ActionDenied)):
        governor_with(httpx.Response(200, json=body)).run("t", {}, ran.append)
    assert ran == []


def test_governor_deny_raises_action_denied_with_record() -> None:
    with pytest.raises(ActionDenied) as err:
        governor_with(httpx.Response(200, json=PERMIT_BODY)).run("t", {}, print)
    assert err.value.code == "default_deny" and err.value.record == PERMIT_BODY["record"]


def test_unserializable_arguments_are_refused_locally() -> None:
    with pytest.raises(ApiError) as err:
        governor_with().check("t", {"n": float("nan")})
    assert err.value.code == "invalid_number"


def test_async_client_retries_decide() -> None:
    transport, seen = scripted(
        httpx.RemoteProtocolError("dropped"), httpx.Response(200, json=PERMIT_BODY)
    )

    async def main() -> dict[str, Any]:
        client = AsyncClient("http://kubewrit.test", "tok")
        client._http = httpx.AsyncClient(base_url=client.url, transport=transport)
        async with client:
            return await client.decide("t", {})

    assert asyncio.run(main())["decision"] == "DENY"
    assert len({json.loads(r.content)["request_id"] for r in seen}) == 1


def test_token_file_is_reread_when_rotated(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    credentials = Credentials(token_file=token_file)
    assert credentials.token() == "first"
    token_file.write_text("second\n")
    stamp = time.time() + 5
    os.utime(token_file, (stamp, stamp))
    assert credentials.headers() == {"Authorization": "Bearer second"}


def test_missing_credentials_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEWRIT_TOKEN", raising=False)
    monkeypatch.delenv("KUBEWRIT_TOKEN_FILE", raising=False)
    monkeypatch.setattr(
        "kubewrit.webhook.client.http.SERVICE_ACCOUNT_TOKEN", Path("/nonexistent/token")
    )
    with pytest.raises(GovernanceUnavailable) as err:
        Credentials().token()
    assert err.value.code == "no_credentials"


def test_retry_policy_names() -> None:
    assert {r.value for r in Retry} == {"never", "connect", "idempotent"}
