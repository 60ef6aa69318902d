"""`kubewrit serve` under kill -9, with one server process and with several (--workers).

What a user relies on: every decision that was answered has its record, durable, even
when the server is killed mid-load; the chains still verify; a request id is decided
once even when its retries land on different worker processes; each worker
writes its own chain; and policies with limits refuse several workers.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, run_cli, start_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def process_tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue
    return found


def stored(data_dir: Path) -> dict[tuple[str, int], str]:
    connection = sqlite3.connect(f"file:{data_dir / 'kubewrit.db'}?mode=ro", uri=True)
    try:
        return {
            (chain, seq): digest
            for chain, seq, digest in connection.execute("SELECT chain, seq, hash FROM records")
        }
    finally:
        connection.close()


def hammer(server: Server, stop: threading.Event, answered: list[dict]) -> None:
    """Decide fresh actions back to back until stopped or the server is gone.

    A new connection every few requests: the kernel spreads connections, not requests,
    over the workers' shared port, so a few long-lived ones could all land on one.
    """
    index = 0
    while not stop.is_set():
        with httpx.Client(
            base_url=server.url, headers=server.headers("support-agent"), timeout=5
        ) as client:
            for _ in range(10):
                index += 1
                try:
                    answer = client.post(
                        "/v1/decide",
                        json={"tool": "process_refund", "args": {"amount": index % 100}},
                    )
                except httpx.HTTPError:
                    return
                if answer.status_code == 200:
                    answered.append(answer.json())


def wait_for_chains(answered: list[dict], count: int, timeout: float = 20.0) -> None:
    """Until answers came from `count` chains: every worker is up and deciding."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len({a["record"]["chain"] for a in list(answered)}) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"answers never came from {count} workers' chains")


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_under_load_loses_no_answered_decision(tmp_path: Path, workers: int) -> None:
    server = start_server(tmp_path, "--workers", str(workers))
    answered: list[dict] = []
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(server, stop, answered)) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        wait_for_chains(answered, workers)
        time.sleep(1.0)
        for pid in process_tree(server.process.pid):  # kill -9: parent and workers at once
            os.kill(pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        server.stop()
    assert len(answered) > 50, "the load did not get going"
    records = stored(server.data_dir)
    acknowledged = {
        (a["record"]["chain"], a["record"]["seq"]): a["record"]["hash"] for a in answered
    }
    missing = {key for key, digest in acknowledged.items() if records.get(key) != digest}
    assert not missing, f"{len(missing)} answered decisions have no record"
    chains = {chain for chain, _ in acknowledged}
    assert len(chains) == workers  # each worker wrote its own chain
    report = run_cli("verify", "--data-dir", str(server.data_dir), "-o", "json", check=False)
    verdict = json.loads(report.stdout)
    assert verdict["ok"], report.stdout
    assert verdict["records"] == len(records)


def listening_workers(server: Server) -> list[int]:
    return [pid for pid in process_tree(server.process.pid)[1:] if "spawn_main" in cmdline(pid)]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_a_worker_killed_under_load_is_replaced_and_loses_nothing(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", "2")
    answered: list[dict] = []
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(server, stop, answered)) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        wait_for_chains(answered, 2)
        time.sleep(0.5)
        victim = listening_workers(server)[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)

        def replaced() -> list[int]:
            workers = listening_workers(server)
            return workers if victim not in workers and len(workers) == 2 else []

        deadline = time.monotonic() + 20
        while not replaced() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert replaced(), "the killed worker was not replaced"
        fresh = [server.decide(tool="send_email", args={}) for _ in range(20)]
        assert {answer.status_code for answer in fresh} == {200}
    finally:
        stop.set()
        server.stop()
    records = stored(server.data_dir)
    acknowledged = {
        (a["record"]["chain"], a["record"]["seq"]): a["record"]["hash"] for a in answered
    }
    assert not {key for key, digest in acknowledged.items() if records.get(key) != digest}
    assert len({chain for chain, _ in records}) == 2  # the replacement continued a chain
    report = run_cli("verify", "--data-dir", str(server.data_dir), "-o", "json", check=False)
    assert json.loads(report.stdout)["ok"], report.stdout


def test_a_request_id_is_decided_once_across_workers(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", "2")
    try:

        def send(request_id: str) -> httpx.Response:
            with httpx.Client(  # a connection of its own: it may land on either worker
                base_url=server.url, headers=server.headers("support-agent"), timeout=10
            ) as client:
                body = {"tool": "process_refund", "args": {"amount": 20}, "request_id": request_id}
                return client.post("/v1/decide", json=body)

        ids = [f"retry-{n}" for n in range(40)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(send, [i for i in ids for _ in range(4)]))
    finally:
        server.stop()
    assert {a.status_code for a in answers} == {200}, [
        a.text for a in answers if a.status_code != 200
    ]
    by_id: dict[str, set[tuple[str, int]]] = {}
    fresh: dict[str, int] = {}
    for request_id, answer in zip([i for i in ids for _ in range(4)], answers, strict=True):
        body = answer.json()
        by_id.setdefault(request_id, set()).add((body["record"]["chain"], body["record"]["seq"]))
        fresh[request_id] = fresh.get(request_id, 0) + (not body["replayed"])
    assert all(len(records) == 1 for records in by_id.values()), by_id
    assert all(count == 1 for count in fresh.values()), fresh
    connection = sqlite3.connect(f"file:{server.data_dir / 'kubewrit.db'}?mode=ro", uri=True)
    decisions = connection.execute(
        "SELECT request_id, COUNT(*), COUNT(DISTINCT chain) FROM records "
        "WHERE kind = 'decision' GROUP BY request_id"
    ).fetchall()
    chains = {c for (c,) in connection.execute("SELECT DISTINCT chain FROM records")}
    connection.close()
    assert sorted(r for r, _, _ in decisions) == sorted(ids)
    assert all(count == 1 for _, count, _ in decisions)
    assert len(chains) == 2  # both workers decided some of them


def test_workers_share_a_budget_and_permit_exactly_it_together(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", "2", policies=EXAMPLES / "limits")
    try:

        def refund(i: int) -> str:
            body = {
                "tool": "process_refund",
                "args": {"amount": 100, "customer_id": f"c-{i}"},
                "request_id": f"r-{i}",
            }
            with httpx.Client(headers=server.headers("support-agent"), timeout=30) as http:
                reply = http.post(f"{server.url}/v1/decide", json=body)
            assert reply.status_code == 200, reply.text
            return str(reply.json()["decision"])

        with ThreadPoolExecutor(16) as pool:
            decisions = Counter(pool.map(refund, range(400)))
        assert decisions == {"PERMIT": 10, "DEFER": 390}
        listed = run_cli(
            "records", "list", "--data-dir", str(server.data_dir), "--limit", "1000", "-o", "json"
        )
        decided = [r for r in json.loads(listed.stdout) if r["kind"] == "decision"]
        assert len(decided) == 400
        assert sum(1 for r in decided if r["decision"] == "PERMIT") == 10
        assert len({r["chain"] for r in decided}) == 2  # both workers drew on the one budget
    finally:
        server.stop()
