"""The standalone console backend over a real SQLite store."""

from __future__ import annotations

from pathlib import Path

from kubewrit.webhook import standalone
from kubewrit.webhook.chain import Record
from kubewrit.webhook.console.backend import RecordFilter
from kubewrit.webhook.console.standalone import StandaloneBackend
from kubewrit.webhook.store.sqlite import SQLiteStore

EXAMPLE_POLICIES = Path(__file__).resolve().parents[2] / "examples" / "policies"


async def test_records_are_the_newest_ones_not_the_first_thousand(tmp_path: Path) -> None:
    runtime = standalone.build(
        standalone.Config(policies=EXAMPLE_POLICIES, data_dir=tmp_path, watch=False)
    )
    store = runtime.authority.backend.queries
    assert isinstance(store, SQLiteStore)
    store.write(
        [
            Record(
                kind="decision",
                decision="DENY" if seq % 2 else "PERMIT",
                agent="support-agent",
                tool="process_refund",
                chain="c",
                seq=seq,
                time=f"2026-01-01T00:{seq // 60:02d}:{seq % 60:02d}.000Z",
            )
            for seq in range(1100)
        ]
    )
    backend = StandaloneBackend(runtime)
    newest = await backend.records(RecordFilter(limit=5))
    assert [r.seq for r in newest] == [1095, 1096, 1097, 1098, 1099]
    denied = await backend.records(
        RecordFilter(decision="DENY", since="2026-01-01T00:18", limit=50)
    )
    assert [r.seq for r in denied] == list(range(1081, 1100, 2))
    found = await backend.record("c", 1099)
    assert found is not None and found.seq == 1099
    assert await backend.record("c", 5000) is None
    for hook in runtime.stop:
        hook()


async def test_each_record_filter_narrows_to_exactly_its_records(tmp_path: Path) -> None:
    runtime = standalone.build(
        standalone.Config(policies=EXAMPLE_POLICIES, data_dir=tmp_path, watch=False)
    )
    store = runtime.authority.backend.queries
    assert isinstance(store, SQLiteStore)
    shapes = [
        ("support-agent", "process_refund", "PERMIT", "rule_allow"),
        ("support-agent", "send_email", "DENY", "default_deny"),
        ("billing-agent", "process_refund", "DEFER", "rule_require_approval"),
        ("billing-agent", "send_email", "DENY", "rule_deny"),
    ]
    store.write(
        [
            Record(
                kind="decision",
                agent=agent,
                tool=tool,
                decision=decision,
                reason=reason,
                chain="c",
                seq=seq,
                time=f"2026-01-01T00:00:{seq:02d}.000Z",
            )
            for seq, (agent, tool, decision, reason) in enumerate(shapes * 5)
        ]
    )
    backend = StandaloneBackend(runtime)

    async def seqs(**wanted: str) -> set[int]:
        return {r.seq for r in await backend.records(RecordFilter(limit=100, **wanted))}

    everything = set(range(20))
    assert await seqs() == everything
    assert await seqs(agent="billing-agent") == {s for s in everything if s % 4 in (2, 3)}
    assert await seqs(tool="send_email") == {s for s in everything if s % 4 in (1, 3)}
    assert await seqs(reason="rule_deny") == {s for s in everything if s % 4 == 3}
    assert await seqs(agent="support-agent", decision="DENY") == {
        s for s in everything if s % 4 == 1
    }
    assert await seqs(tool="send_email", since="2026-01-01T00:00:10") == {11, 13, 15, 17, 19}
    assert await seqs(agent="nobody") == set()
    for hook in runtime.stop:
        hook()
