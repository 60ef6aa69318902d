"""After a failed write the recorder is in doubt about its chain, and must leave no gap.

A ledger of one object per record (ActionRecords) can lose a write's answer after
storing it, or keep a batch with a hole: record k refused, record k+1 created. The
chain goes on from the last record that continues it as stored; a hole is closed with
the record sealed for it before anything follows, whatever is stored past the chain
that is not its writer's is removed, and while the store cannot do that, every decision
is RecordUnavailable (fail closed).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from kubewrit.webhook import chain, keys, verify
from kubewrit.webhook.chain import Anchor, Draft, Head, Record
from kubewrit.webhook.errors import Unsupported
from kubewrit.webhook.keys import Signer
from kubewrit.webhook.recorder import PartialWrite, Recorder, RecordUnavailable
from kubewrit.webhook.store.sqlite import SQLiteStore


class ObjectLedger:
    """One stored object per record, created one by one, as ActionRecords are.

    `lose`: seqs that land but whose answer is lost. `refuse`: seqs whose create fails
    while the rest of their batch lands; the store then goes down (`down`) until a test
    brings it back. A create over an existing seq with other content fails, as a 409 does.
    """

    atomic = False

    def __init__(self) -> None:
        self.objects: dict[int, Record] = {}
        self.anchors: list[Anchor] = []
        self.lose: set[int] = set()
        self.refuse: set[int] = set()
        self.down = False
        self.gate = threading.Event()
        self.gate.set()

    def _reachable(self) -> None:
        if self.down:
            raise ConnectionError("connection refused")

    def head(self, chain_id: str) -> Record | None:
        self._reachable()
        return self.objects[max(self.objects)] if self.objects else None

    def after(self, chain_id: str, seq: int) -> list[Record]:
        self._reachable()
        return [self.objects[s] for s in sorted(self.objects) if s > seq]

    def write(self, records: Sequence[Record]) -> None:
        self.gate.wait(5)
        self._reachable()
        failures: dict[int, Exception] = {}
        for index, record in enumerate(records):
            existing = self.objects.get(record.seq)
            if record.seq in self.refuse:
                failures[index] = ConnectionError(f"create of seq {record.seq} reset")
            elif existing is not None and existing.hash != record.hash:
                failures[index] = RuntimeError(f"seq {record.seq} exists with other content")
            else:
                self.objects[record.seq] = record
                if record.seq in self.lose:
                    failures[index] = ConnectionError("the answer never arrived")
        self.lose -= {r.seq for r in records}
        if any(r.seq in self.refuse for r in records):
            self.refuse.clear()
            self.down = True
        if failures:
            first = min(failures)
            raise PartialWrite(first, failures[first])

    def remove(self, records: Sequence[Record]) -> None:
        self._reachable()
        for record in records:
            self.objects.pop(record.seq, None)

    def publish_anchor(self, anchor: Anchor) -> None:
        self._reachable()
        self.anchors.append(anchor)

    def verify(self, signer: Signer) -> verify.Report:
        records = [self.objects[s].to_dict() for s in sorted(self.objects)]
        return verify.verify(records, self.anchors, [signer.verifier])


def permit() -> Draft:
    return Draft(kind="decision", decision="PERMIT")


@pytest.fixture
def signer() -> Signer:
    return keys.generate()


def started(ledger: ObjectLedger, signer: Signer) -> Recorder:
    recorder = Recorder(ledger, signer, "c1")
    recorder.start()
    return recorder


def test_the_chain_continues_after_a_write_whose_answer_was_lost(signer: Signer) -> None:
    ledger = ObjectLedger()
    recorder = started(ledger, signer)
    recorder.record_sync(permit())
    ledger.lose = {2}
    with pytest.raises(RecordUnavailable):
        recorder.record_sync(permit())
    after = [recorder.record_sync(permit()) for _ in range(3)]
    recorder.stop()
    assert [r.seq for r in after] == [3, 4, 5]
    assert sorted(ledger.objects) == [0, 1, 2, 3, 4, 5]
    assert ledger.verify(signer).ok


def test_a_hole_in_a_batch_is_closed_before_the_chain_goes_on(signer: Signer) -> None:
    """The stop-16 CI failure: seq k refused, k+1 created, the API server gone meanwhile."""
    ledger = ObjectLedger()
    recorder = started(ledger, signer)
    recorder.record_sync(permit())  # seq 1
    ledger.gate.clear()
    first = recorder.submit(permit())  # seq 2, held in the ledger while a batch queues
    batch = [recorder.submit(permit()) for _ in range(4)]  # seqs 3..6, one batch
    ledger.refuse = {4}
    ledger.gate.set()
    assert first.result(5).seq == 2
    assert batch[0].result(5).seq == 3
    for future in batch[1:]:
        with pytest.raises(RecordUnavailable):
            future.result(5)
    assert sorted(ledger.objects) == [0, 1, 2, 3, 5, 6]  # a hole, and the store is down

    with pytest.raises(RecordUnavailable):  # in doubt while the store cannot answer
        recorder.record_sync(permit())
    ledger.down = False
    after = [recorder.record_sync(permit()) for _ in range(3)]
    recorder.stop()

    assert [r.seq for r in after] == [7, 8, 9]  # seq 4 created again, 5 and 6 kept
    assert sorted(ledger.objects) == list(range(10))
    report = ledger.verify(signer)
    assert report.ok, report.problems


def test_a_record_planted_past_the_head_is_not_adopted(signer: Signer) -> None:
    ledger = ObjectLedger()
    recorder = started(ledger, signer)
    tip = recorder.record_sync(permit())
    other = keys.generate()
    planted = Head("c1", tip.seq, tip.hash).seal_next(permit(), other)
    ledger.objects[planted.seq] = planted
    with pytest.raises(RecordUnavailable):  # the next write collides with it
        recorder.record_sync(permit())
    mine = recorder.record_sync(permit())
    recorder.stop()
    assert mine.seq == planted.seq and mine.key_id == signer.key_id
    assert ledger.objects[planted.seq].hash == mine.hash
    assert ledger.verify(signer).ok


# -- chain.continuation ------------------------------------------------------------------


def sealed(signer: Signer, count: int, signed_at: set[int] | None = None) -> list[Record]:
    head = Head("c1")
    return [
        head.seal_next(permit(), signer, signed=signed_at is None or i in signed_at)
        for i in range(count)
    ]


def test_continuation_adopts_what_landed_in_line(signer: Signer) -> None:
    records = sealed(signer, 5)
    known = Head("c1", 1, records[1].hash)
    head, rest = chain.continuation(known, records[2:], signer.verifier)
    assert (head.seq, head.hash, rest) == (4, records[4].hash, [])


def test_continuation_stops_at_a_hole(signer: Signer) -> None:
    records = sealed(signer, 6)
    known = Head("c1", 1, records[1].hash)
    head, rest = chain.continuation(known, [records[2], records[4], records[5]], signer.verifier)
    assert head.seq == 2
    assert [r.seq for r in rest] == [4, 5]


def test_continuation_ends_at_the_last_record_its_writer_signed(signer: Signer) -> None:
    records = sealed(signer, 6, signed_at={0, 1, 3})
    known = Head("c1", 1, records[1].hash)
    head, rest = chain.continuation(known, records[2:], signer.verifier)
    assert head.seq == 3  # seq 2 is vouched for by 3's link; 4 and 5 by nobody
    assert [r.seq for r in rest] == [4, 5]


def test_continuation_refuses_other_keys_links_elsewhere_and_altered_content(
    signer: Signer,
) -> None:
    records = sealed(signer, 3)
    known = Head("c1", 1, records[1].hash)
    stranger = Head("c1", 1, records[1].hash).seal_next(permit(), keys.generate())
    elsewhere = Head("c1", 1, "f" * 64).seal_next(permit(), signer)
    altered = Record(**{**records[2].__dict__, "decision": "DENY"})
    for stored in (stranger, elsewhere, altered):
        head, rest = chain.continuation(known, [stored], signer.verifier)
        assert (head.seq, rest) == (1, [stored])


def test_a_sqlite_ledger_removes_nothing(tmp_path: Path, signer: Signer) -> None:
    store = SQLiteStore(tmp_path / "k.db")
    records = sealed(signer, 2)
    store.write(records)
    with pytest.raises(Unsupported):
        store.remove(records[1:])
    assert [r.seq for r in store.after("c1", 0)] == [1]
    store.close()
