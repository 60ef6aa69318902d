"""The bulk attack against a real `kubewrit serve`, from concurrent clients, with the
server killed (SIGKILL) and restarted in the middle: exactly the budget is permitted.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO, run_cli, start_server

CLIENTS = 16
REFUNDS = 1470


def test_the_bulk_attack_is_held_at_exactly_the_budget_across_a_kill(tmp_path: Path) -> None:
    server = start_server(tmp_path, policies=REPO / "examples" / "limits")
    try:
        answers: dict[str, dict[str, Any]] = {}
        lock = threading.Lock()
        work = iter(range(REFUNDS))
        restarted = threading.Event()

        def client() -> None:
            with httpx.Client(headers=server.headers("support-agent"), timeout=15) as http:
                for i in work:
                    body = {
                        "tool": "process_refund",
                        "args": {"amount": 100, "customer_id": f"c-{i}"},
                        "request_id": f"refund-{i}",
                    }
                    while True:  # what the SDK does: retry with the same request id
                        try:
                            reply = http.post(f"{server.url}/v1/decide", json=body)
                        except httpx.TransportError:
                            restarted.wait(30)
                            continue
                        if reply.status_code == 200:
                            break
                        assert reply.status_code in (502, 503), reply.text
                        restarted.wait(30)
                    with lock:
                        answers[body["request_id"]] = reply.json()

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        while len(answers) < REFUNDS // 3:
            threading.Event().wait(0.05)
        server.restart(kill=True)
        restarted.set()
        for t in threads:
            t.join(timeout=300)
        assert len(answers) == REFUNDS
        decisions = Counter(a["decision"] for a in answers.values())
        assert decisions == {"PERMIT": 10, "DEFER": REFUNDS - 10}
        held = next(a for a in answers.values() if a["decision"] == "DEFER")
        assert held["reason"] == "limit_exceeded"
        assert held["limits"][0]["limit"] == "refund-budget/auto-refund-budget"
        assert held["limits"][0]["exceeded"] is True

        # The records say the same, and a recount from them finds no overspend.
        verified = run_cli("verify", "--limits", "--data-dir", str(server.data_dir), "-o", "json")
        report = json.loads(verified.stdout)
        assert report["ok"] is True and report["limits"]["overspends"] == []
        budget = {
            b["limit"]: b["used_now"]
            for b in report["limits"]["budgets"]
            if b["limit"].endswith("auto-refund-budget")
        }
        assert budget == {"refund-budget/auto-refund-budget": "1000"}

        # What the server counts now is what the records say.
        listed = json.loads(
            run_cli(
                "limits",
                "--url",
                server.url,
                "--token",
                server.tokens["approver"],
                "-o",
                "json",
            ).stdout
        )
        counted = {u["limit"]: u["used"] for u in listed if "auto-refund" in u["limit"]}
        assert counted == {"refund-budget/auto-refund-budget": "1000"}
    finally:
        server.stop()
