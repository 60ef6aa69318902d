"""Chains, anchors and offline verification: every kind of tampering is named."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest
from kubewrit.webhook import chain, keys, verify, writ
from kubewrit.webhook.chain import Draft
from kubewrit.webhook.recorder import Recorder, RecordUnavailable
from kubewrit.webhook.store.sqlite import SQLiteStore


@pytest.fixture
def signer() -> keys.Signer:
    return keys.generate()


def build_chain(signer: keys.Signer, count: int = 8) -> tuple[list[dict], chain.Anchor]:
    head = chain.Head("writer-1")
    records = [
        head.seal_next(Draft(kind="decision", decision="PERMIT", tool=f"tool{i}"), signer).to_dict()
        for i in range(count)
    ]
    return records, chain.sign_anchor(chain.Record.from_dict(records[-1]), signer)


def first_problem(records, anchor, signer) -> verify.Problem:
    report = verify.verify(records, [anchor], [signer.verifier])
    assert not report.ok
    return report.problems[0]


def test_intact_chain_verifies(signer) -> None:
    records, anchor = build_chain(signer)
    report = verify.verify(records, [anchor], [signer.verifier])
    assert report.ok and report.total == 8


def test_modified_record(signer) -> None:
    records, anchor = build_chain(signer)
    records[3]["decision"] = "DENY"
    problem = first_problem(records, anchor, signer)
    assert (problem.seq, problem.kind) == (3, "modified")


def test_modified_and_rehashed_record_fails_its_signature(signer) -> None:
    records, anchor = build_chain(signer)
    records[3]["decision"] = "DENY"
    records[3]["hash"] = chain.record_hash(
        {k: v for k, v in records[3].items() if k not in ("hash", "signature")}
    )
    assert first_problem(records, anchor, signer).kind == "bad_signature"


def test_removed_record(signer) -> None:
    records, anchor = build_chain(signer)
    del records[4]
    problem = first_problem(records, anchor, signer)
    assert (problem.seq, problem.kind) == (4, "missing")


def test_reordered_records(signer) -> None:
    records, anchor = build_chain(signer)
    records[2], records[5] = records[5], records[2]
    assert first_problem(records, anchor, signer).kind == "reordered"


def test_inserted_record_from_another_chain(signer) -> None:
    records, anchor = build_chain(signer)
    other, _ = build_chain(signer)
    forged = copy.deepcopy(other[3])
    forged["chain"] = "writer-1"
    records.insert(4, forged)
    assert first_problem(records, anchor, signer).kind in {"modified", "inserted"}


def test_truncated_after_anchor(signer) -> None:
    records, anchor = build_chain(signer)
    problem = first_problem(records[:5], anchor, signer)
    assert (problem.seq, problem.kind) == (5, "truncated")


def test_wrong_key(signer) -> None:
    records, anchor = build_chain(signer)
    assert first_problem(records, anchor, keys.generate()).kind == "unknown_key"


def test_genuine_believes_signed_content_once_and_never_changed_content(signer) -> None:
    """What a reader of ActionRecords (history, request ids) counts: content a kubewrit
    key signed, checked once; a copy of it counts, a changed or re-hashed one never does."""
    records, _ = build_chain(signer, 2)
    record = chain.Record.from_dict(records[1])
    vouched: set[str] = set()
    assert chain.genuine(record, [signer.verifier], vouched)
    assert vouched == {record.hash}
    copied = chain.Record.from_dict({**records[1], "signature": ""})
    assert not chain.genuine(copied, [signer.verifier])
    assert chain.genuine(copied, [signer.verifier], vouched)
    moved = {**records[1], "time": "2030-01-01T00:00:00.000000Z"}
    assert not chain.genuine(chain.Record.from_dict(moved), [signer.verifier], vouched)
    rehashed = {**moved, "hash": chain.record_hash(chain.Record.from_dict(moved).body())}
    assert not chain.genuine(chain.Record.from_dict(rehashed), [signer.verifier], vouched)
    assert not chain.genuine(record, [keys.generate().verifier])


def test_recorder_group_commits_concurrent_decisions_in_order(tmp_path: Path, signer) -> None:
    store = SQLiteStore(tmp_path / "k.db")
    recorder = Recorder(store, signer, "c1")
    recorder.start()
    futures = []

    def submit(n: int) -> None:
        for i in range(50):
            futures.append(recorder.submit(Draft(kind="decision", tool=f"t{n}-{i}")))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [f.result(timeout=30) for f in futures]
    recorder.stop()
    assert sorted(r.seq for r in records) == list(range(1, 401))
    assert recorder.batches < 400
    report = verify.verify(list(store.iter_records()), store.anchors(), [signer.verifier])
    assert report.ok, report.problems


def test_recorder_resumes_its_chain_after_restart(tmp_path: Path, signer) -> None:
    for _ in range(2):
        store = SQLiteStore(tmp_path / "k.db")
        recorder = Recorder(store, signer, "c1")
        recorder.start()
        recorder.record_sync(Draft(kind="decision"))
        recorder.stop()
        store.close()
    store = SQLiteStore(tmp_path / "k.db")
    assert [r["seq"] for r in store.iter_records()] == [0, 1, 2]
    assert verify.verify(list(store.iter_records()), store.anchors(), [signer.verifier]).ok


def test_unwritable_store_fails_the_record(tmp_path: Path, signer) -> None:
    store = SQLiteStore(tmp_path / "k.db")
    recorder = Recorder(store, signer, "c1")
    recorder.start()
    store._writer.close()  # the disk is gone
    with pytest.raises(RecordUnavailable):
        recorder.record_sync(Draft(kind="decision"))
    recorder.stop()


def test_writ_rejections(signer) -> None:
    record = chain.Head("c").seal_next(
        Draft(kind="decision", agent="a", action_hash="sha256:abc"), signer
    )
    token = writ.issue(signer, record, ttl=60, now=1000)
    assert (
        writ.verify(token, signer.verifier, "sha256:abc", agent="a", now=1001).record_hash
        == record.hash
    )
    cases = [
        (dict(action="sha256:other"), "action_mismatch"),
        (dict(now=1061), "expired"),
        (dict(keys_=keys.generate().verifier), "bad_signature"),
        (dict(agent="b"), "agent_mismatch"),
    ]
    for change, code in cases:
        with pytest.raises(writ.WritRejected) as caught:
            writ.verify(
                token,
                change.get("keys_", signer.verifier),
                change.get("action", "sha256:abc"),
                agent=change.get("agent", "a"),
                now=change.get("now", 1001),
            )
        assert caught.value.code == code
    with pytest.raises(writ.WritRejected):
        writ.verify(token[:-4] + "AAAA", signer.verifier, "sha256:abc", now=1001)


def test_writs_are_standard_jwts(signer) -> None:
    import jwt

    record = chain.Head("c").seal_next(
        Draft(kind="decision", agent="a", action_hash="sha256:x"), signer
    )
    token = writ.issue(signer, record)
    claims = jwt.decode(token, signer.verifier.public_key, algorithms=["EdDSA"], issuer="kubewrit")
    assert (claims["sub"], claims["act"], claims["rec"]) == ("a", "sha256:x", record.hash)


def test_malformed_writs_are_rejected(signer) -> None:
    for token in ("", "a.b", "a.b.c", "...", "eyJ9.eyJ9.AA"):
        with pytest.raises(writ.WritRejected) as caught:
            writ.verify(token, signer.verifier, "sha256:x")
        assert caught.value.code == "malformed"
