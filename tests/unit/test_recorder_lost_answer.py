"""A write whose answer is lost (the API server died after storing it) must not wedge the
chain: the recorder re-reads the durable head before the next write and continues after
the record that landed, instead of reusing its sequence number forever."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from kubewrit.webhook import keys, verify
from kubewrit.webhook.chain import Draft, Record
from kubewrit.webhook.recorder import Recorder, RecordUnavailable
from kubewrit.webhook.store.sqlite import SQLiteStore


class LosesOneAnswer:
    """A ledger over SQLite whose next write lands but then reports a connection error,
    and which refuses to overwrite a stored sequence number with other content."""

    atomic = False

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.lose_next = False

    def head(self, chain_id: str) -> Record | None:
        return self.store.head(chain_id)

    def write(self, records: Sequence[Record]) -> None:
        head = self.store.head(records[0].chain)
        if head is not None and records[0].seq <= head.seq:
            raise RuntimeError(f"ActionRecord seq {records[0].seq} exists with other content")
        self.store.write(records)
        if self.lose_next:
            self.lose_next = False
            raise ConnectionError("connection reset: the answer never arrived")

    def publish_anchor(self, anchor: object) -> None:
        self.store.publish_anchor(anchor)  # type: ignore[arg-type]


def test_the_chain_continues_after_a_write_whose_answer_was_lost(tmp_path: Path) -> None:
    signer = keys.generate()
    store = SQLiteStore(tmp_path / "k.db")
    ledger = LosesOneAnswer(store)
    recorder = Recorder(ledger, signer, "c1")
    recorder.start()
    recorder.record_sync(Draft(kind="decision", decision="PERMIT"))
    ledger.lose_next = True
    with pytest.raises(RecordUnavailable):
        recorder.record_sync(Draft(kind="decision", decision="PERMIT"))
    after = [recorder.record_sync(Draft(kind="decision", decision="PERMIT")) for _ in range(3)]
    recorder.stop()
    assert [r.seq for r in after] == [3, 4, 5]
    records = list(store.iter_records())
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert verify.verify(records, store.anchors(), [signer.verifier]).ok
    store.close()
