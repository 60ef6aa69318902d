"""The HTTP contract of a real `kubewrit serve`: no request makes it fail (schema fuzzing),
bad parameters are clear 400s, and request ids hold under concurrent retries."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import Server, start_server


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("contract"))
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def test_no_generated_request_makes_the_server_fail(shared_server: Server) -> None:
    """Every operation of /openapi.json, fuzzed from its schema, as agent, approver and nobody."""
    api = schemathesis.openapi.from_url(f"{shared_server.url}/openapi.json")
    roles = itertools.cycle(["support-agent", "approver", None])
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            role = next(roles)
            headers = shared_server.headers(role) if role else {}
            response = case.call(base_url=shared_server.url, headers=headers, timeout=30)
            if response.status_code >= 500 or "Traceback" in response.text:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

        call()
    assert failures == []


@pytest.mark.parametrize(
    "params",
    [
        {"after": str(10**30)},
        {"after": "-99999999999999999999"},
        {"after": ""},
        {"after": "x"},
        {"limit": "0"},
        {"limit": str(2**70)},
        {"decision": "MAYBE"},
    ],
)
def test_bad_record_query_parameters_are_clear_400s(shared_server: Server, params) -> None:
    answer = shared_server.get("/v1/records", "approver", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"


def test_a_long_poll_with_a_bad_wait_is_a_400(shared_server: Server) -> None:
    for wait in ("nan", "-1", "1e400", "301"):
        answer = shared_server.get("/v1/approvals/apr-x", "support-agent", params={"wait": wait})
        assert answer.status_code == 400, (wait, answer.text)


def count_decisions(srv: Server, request_id: str) -> int:
    items = srv.get("/v1/records", "approver", params={"limit": 1000}).json()["items"]
    return sum(1 for r in items if r["request_id"] == request_id and r["kind"] == "decision")


@pytest.mark.parametrize("amount", [45, 340, 1200])
def test_concurrent_retries_of_one_request_id_are_one_decision(
    shared_server: Server, amount: int
) -> None:
    request_id = f"concurrent-{amount}"

    def send(_: int) -> dict:
        answer = shared_server.decide(
            tool="process_refund", args={"amount": amount}, request_id=request_id
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(16)))
    assert count_decisions(shared_server, request_id) == 1
    assert len({a["record"]["seq"] for a in answers}) == 1
    assert len({a["writ"] for a in answers}) == 1
    approvals = {(a["approval"] or {}).get("id") for a in answers}
    assert len(approvals) == 1 and ((None in approvals) == (amount != 340))
    assert sum(1 for a in answers if not a["replayed"]) == 1


def test_a_replay_returns_the_original_writ_not_a_new_one(shared_server: Server) -> None:
    first = shared_server.decide(tool="send_email", args={"to": "a@b.c"}, request_id="w-1").json()
    time.sleep(1.1)  # a writ minted now would carry another issue time
    again = shared_server.decide(tool="send_email", args={"to": "a@b.c"}, request_id="w-1").json()
    assert again["replayed"] and again["writ"] == first["writ"]


def test_a_retried_defer_returns_the_approval_it_opened(shared_server: Server) -> None:
    args = {"amount": 341, "order_id": "same"}
    one = shared_server.decide(tool="process_refund", args=args, request_id="d-1").json()
    two = shared_server.decide(tool="process_refund", args=args, request_id="d-2").json()
    again = shared_server.decide(tool="process_refund", args=args, request_id="d-2").json()
    assert one["approval"]["id"] != two["approval"]["id"]
    assert again["approval"]["id"] == two["approval"]["id"]


def test_request_ids_survive_a_restart(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        first = srv.decide(tool="send_email", args={"to": "a@b.c"}, request_id="r").json()
    finally:
        srv.stop()
    shutil.rmtree(tmp_path / "policies")
    again_srv = start_server(tmp_path)
    try:
        again = again_srv.decide(tool="send_email", args={"to": "a@b.c"}, request_id="r").json()
        assert again["replayed"] and again["record"] == first["record"]
        assert again["writ"] == first["writ"]
        assert count_decisions(again_srv, "r") == 1
    finally:
        again_srv.stop()


def test_openapi_describes_the_bodies_from_the_models(shared_server: Server) -> None:
    spec = httpx.get(f"{shared_server.url}/openapi.json").json()
    decide = spec["paths"]["/v1/decide"]["post"]
    ref = decide["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/DecideRequest")
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
