"""`kubewrit records list` and `approvals list` read like `kubectl get`, piped or at 80 columns."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import Server


def columns_of(output: str) -> tuple[list[str], list[dict[str, str]]]:
    """Split a kubectl-style list by the header's column offsets (headers may hold a space)."""
    header, *lines = output.rstrip("\n").split("\n")
    starts = [
        i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 2 : i] == "  ")
    ]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    rows = []
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        for a in starts[1:]:
            assert line[a - 1] == " ", f"a cell runs into the next column:\n{output}"
        rows.append(dict(zip(names, cells, strict=True)))
    return names, rows


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def test_records_list_shows_whole_values_in_aligned_columns(server: Server, narrow) -> None:
    server.decide(tool="process_refund", args={"amount": 45})
    server.decide(tool="process_refund", args={"amount": 1200})
    deferred = server.decide(tool="process_refund", args={"amount": 340}).json()
    output = server.kubewrit("records", "list").stdout
    assert "…" not in output and "│" not in output and "┃" not in output
    names, rows = columns_of(output)
    assert names == [
        "SEQ",
        "AGE",
        "KIND",
        "AGENT",
        "TOOL",
        "DECISION",
        "REASON",
        "RULE",
        "APPROVER",
    ]
    assert [(r["SEQ"], r["KIND"], r["DECISION"], r["RULE"]) for r in rows] == [
        ("0", "genesis", "<none>", "<none>"),
        ("1", "decision", "PERMIT", "support-agent/small-refunds"),
        ("2", "decision", "DENY", "support-agent/large-refunds"),
        ("3", "decision", "DEFER", "support-agent/mid-range-refunds"),
    ]
    assert {r["AGENT"] for r in rows[1:]} == {"support-agent"}
    assert {r["TOOL"] for r in rows[1:]} == {"process_refund"}

    wide = columns_of(server.kubewrit("records", "list", "-o", "wide").stdout)
    assert wide[0][-6:] == ["TIME", "RISK", "APPROVAL", "REQUEST ID", "CHAIN", "ACTION HASH"]
    assert wide[1][3]["ACTION HASH"] == deferred["action_hash"]

    as_yaml = yaml.safe_load(server.kubewrit("records", "list", "-o", "yaml").stdout)
    as_json = json.loads(server.kubewrit("records", "list", "-o", "json").stdout)
    assert as_yaml == as_json and [r["seq"] for r in as_json] == [0, 1, 2, 3]

    newest = columns_of(
        server.kubewrit("records", "list", "--limit", "2", "--decision", "DENY").stdout
    )[1]
    assert [r["SEQ"] for r in newest] == ["2"]


def test_approvals_list_never_cuts_the_id(server: Server, narrow) -> None:
    ids = [
        server.decide(
            tool="process_refund", args={"amount": amount, "order_id": f"A-{amount}"}
        ).json()["approval"]["id"]
        for amount in (340, 600)
    ]
    output = server.kubewrit("approvals", "list", "--url", server.url).stdout
    assert "…" not in output and "│" not in output
    names, rows = columns_of(output)
    assert names == ["ID", "AGENT", "TOOL", "RISK", "PHASE", "EXPIRES IN", "AGE", "ARGS"]
    assert sorted(r["ID"] for r in rows) == sorted(ids)
    by_id = {r["ID"]: r for r in rows}
    assert by_id[ids[1]]["RISK"] == "high" and by_id[ids[1]]["PHASE"] == "Pending"
    assert json.loads(by_id[ids[1]]["ARGS"]) == {"amount": 600, "order_id": "A-600"}

    server.kubewrit("approvals", "approve", ids[0], "--url", server.url)
    wide = server.kubewrit("approvals", "list", "--phase", "all", "-o", "wide", "--url", server.url)
    names, rows = columns_of(wide.stdout)
    assert "DECIDED BY" in names and "ACTION HASH" in names
    assert {r["ID"]: r["DECIDED BY"] for r in rows}[ids[0]] == "approver"
    listed = yaml.safe_load(
        server.kubewrit("approvals", "list", "-o", "yaml", "--url", server.url).stdout
    )
    assert [item["id"] for item in listed] == [ids[1]]
