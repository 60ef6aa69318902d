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
