"""One signature per batch: what the verifier still finds, and who still signs every record.

A batched record (`batched: true`, empty signature) is vouched for by the next signed
record of its chain. Whatever a verifier found when every record was signed it must
still find: a changed record, a removed signature, a re-hashed run, an unsigned tail.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from kubewrit.webhook import chain, keys, verify
from kubewrit.webhook.chain import Anchor, Draft, Record
from kubewrit.webhook.recorder import Recorder
from kubewrit.webhook.store.sqlite import SQLiteStore


@pytest.fixture
def signer() -> keys.Signer:
    return keys.generate()


def batched_chain(signer: keys.Signer, batches: Sequence[int]) -> list[dict]:
    """A chain sealed as an atomic ledger's recorder seals it: the last of each batch signed."""
    head = chain.Head("w")
    records = [head.seal_next(chain.genesis_draft(signer.verifier.b64), signer)]
    for size in batches:
        for index in range(size):
            draft = Draft(kind="decision", decision="PERMIT", tool=f"t{len(records)}")
            records.append(head.seal_next(draft, signer, signed=index == size - 1))
    return [r.to_dict() for r in records]


def rehash_from(records: list[dict], start: int) -> None:
    """What someone without the key does after a change: re-hash and re-link onward."""
    for position in range(start, len(records)):
        if position:
            records[position]["prev"] = records[position - 1]["hash"]
        body = {k: v for k, v in records[position].items() if k not in chain.UNSIGNED_FIELDS}
        records[position]["hash"] = chain.record_hash(body)


def check(records: list[dict], signer: keys.Signer, anchors: Sequence[Anchor] = ()):
    return verify.verify(records, anchors, [signer.verifier])


def test_a_batched_chain_verifies_with_one_signature_per_batch(signer) -> None:
    records = batched_chain(signer, [5, 1, 8])
    assert [bool(r["signature"]) for r in records] == [True] + [False] * 4 + [True] * 2 + [
        False
    ] * 7 + [True]
    assert all(r.get("batched") is True for r in records if not r["signature"])
    assert all("batched" not in r for r in records if r["signature"])
    report = check(records, signer)
    assert report.ok, report.problems


def test_a_changed_batched_record_is_modified(signer) -> None:
    records = batched_chain(signer, [5])
    records[2]["tool"] = "wire_money"
    problem = check(records, signer).problems[0]
    assert (problem.kind, problem.seq) == ("modified", 2)


def test_a_changed_batched_record_rehashed_onward_breaks_its_batch_signature(signer) -> None:
    records = batched_chain(signer, [5, 3])
    records[2]["tool"] = "wire_money"
    rehash_from(records, 2)
    problem = check(records, signer).problems[0]
    assert (problem.kind, problem.seq) == ("bad_signature", 5)
    assert "batched records 1-4" in problem.detail


def test_removing_a_signed_records_signature_is_found(signer) -> None:
    records = batched_chain(signer, [3, 3])
    records[3]["signature"] = ""
    problem = check(records, signer).problems[0]
    assert (problem.kind, problem.seq) == ("bad_signature", 3)


def test_marking_a_signed_record_batched_is_a_modification(signer) -> None:
    records = batched_chain(signer, [3, 3])
    records[3]["signature"], records[3]["batched"] = "", True
    problem = check(records, signer).problems[0]
    assert (problem.kind, problem.seq) == ("modified", 3)


def test_batched_records_ending_a_chain_are_unsigned_unless_a_signed_head_covers_them(
    signer,
) -> None:
    records = batched_chain(signer, [3, 3])[:-1]  # the batch's signed record is gone
    problem = check(records, signer).problems[0]
    assert (problem.kind, problem.seq) == ("unsigned", 4)
    anchor = chain.sign_anchor(Record.from_dict(records[-1]), signer)
    assert check(records, signer, [anchor]).ok  # an anchor signed exactly that head


def test_the_recorder_signs_the_last_record_of_each_batch_and_every_approval(
    tmp_path: Path, signer
) -> None:
    store = SQLiteStore(tmp_path / "k.db")
    recorder = Recorder(store, signer, "c1")
    recorder.start()
    futures = []

    def submit(n: int) -> None:
        for i in range(40):
            kind = "approval" if i % 10 == 0 else "decision"
            futures.append(recorder.submit(Draft(kind=kind, tool=f"t{n}-{i}")))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for future in futures:
        future.result(timeout=30)
    recorder.stop()
    stored = list(store.iter_records())
    signed = [r for r in stored if r["signature"]]
    assert recorder.batches < len(stored) - 1  # batches formed, or nothing was tested
    assert len(signed) < len(stored)
    assert all(r["signature"] for r in stored if r["kind"] != "decision")
    assert stored[-1]["signature"]  # a chain never ends unsigned
    report = verify.verify(stored, store.anchors(), [signer.verifier])
    assert report.ok, report.problems
    store.close()


class EveryRecordItsOwnWrite:
    """A ledger that may keep part of a batch (as ActionRecords do)."""

    atomic = False

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.gate = threading.Event()

    def head(self, chain_id: str) -> Record | None:
        return self.store.head(chain_id)

    def after(self, chain_id: str, seq: int) -> list[Record]:
        return self.store.after(chain_id, seq)

    def write(self, records: Sequence[Record]) -> None:
        self.gate.wait(5)  # let a batch queue up behind the first write
        self.store.write(records)

    def remove(self, records: Sequence[Record]) -> None:
        self.store.remove(records)

    def publish_anchor(self, anchor: Anchor) -> None:
        self.store.publish_anchor(anchor)


def test_a_ledger_that_may_keep_part_of_a_batch_gets_every_record_signed(
    tmp_path: Path, signer
) -> None:
    store = SQLiteStore(tmp_path / "k.db")
    ledger = EveryRecordItsOwnWrite(store)
    recorder = Recorder(ledger, signer, "c1")
    ledger.gate.set()
    recorder.start()
    ledger.gate.clear()
    futures = [recorder.submit(Draft(kind="decision", tool=f"t{i}")) for i in range(30)]
    ledger.gate.set()
    for future in futures:
        future.result(timeout=30)
    recorder.stop()
    stored = list(store.iter_records())
    assert recorder.batches < 30
    assert all(r["signature"] and "batched" not in r for r in stored)
    store.close()
