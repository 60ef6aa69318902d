"""Verification on every core finds exactly what the serial walk finds.

Many records are checked by forked processes ahead of the walk, or (a store's) while
they are read; these tests tamper with records in each way the verifier names and
compare the parallel report with the serial one, finding for finding.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubewrit.webhook import chain, keys, verify
from kubewrit.webhook.chain import Draft
from kubewrit.webhook.store.sqlite import SQLiteStore

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def signer() -> keys.Signer:
    return keys.generate()


@pytest.fixture(autouse=True, params=["batches", "one_at_a_time"])
def checker(request, monkeypatch) -> str:
    """Every test twice: signatures checked in batches (small ones, so a chain spans
    several) and, as where the batch verifier is not built, one at a time."""
    monkeypatch.setattr(verify, "BATCH", 8)
    if request.param == "one_at_a_time":
        monkeypatch.setattr(keys, "_verify_batch", None)
    return str(request.param)


def records_of(signer: keys.Signer, chains: int = 3, each: int = 40) -> list[dict[str, Any]]:
    out = []
    for n in range(chains):
        head = chain.Head(f"w{n}")
        for i in range(each):
            draft = Draft(kind="decision", decision="PERMIT", agent="a", tool=f"t{i}")
            out.append(head.seal_next(draft, signer).to_dict())
    return out


def findings(report: verify.Report) -> list[tuple[str, int | None, str, str]]:
    return [(p.chain, p.seq, p.kind, p.detail) for p in report.problems]


def both(records: list[dict[str, Any]], trusted: list[keys.Verifier], monkeypatch) -> tuple:
    serial = verify.verify(records, [], trusted)
    monkeypatch.setattr(verify, "PARALLEL_FROM", 10)
    computed = []
    original = verify._sound

    def sound(*args: Any) -> dict[int, bool] | None:
        computed.append(original(*args))
        return computed[-1]

    monkeypatch.setattr(verify, "_sound", sound)
    parallel = verify.verify(records, [], trusted, parallel=True)
    assert computed and computed[0] is not None  # the forked checks did run
    return serial, parallel


def tamper(records: list[dict[str, Any]], signer: keys.Signer, how: str, rng: random.Random):
    index = rng.randrange(1, len(records) - 1)
    record = dict(records[index])
    if how == "modified":
        record["tool"] = "other"
    elif how == "rehashed":  # changed and re-hashed, but not re-signed
        record["tool"] = "other"
        record["hash"] = chain.record_hash(chain.Record.from_dict(record).body())
    elif how == "resigned_by_stranger":
        stranger = keys.generate()
        sealed = replace(chain.Record.from_dict(record), key_id=stranger.key_id)
        record = chain.seal(
            Draft(**{f: getattr(sealed, f) for f in Draft.__dataclass_fields__}),
            sealed.chain,
            sealed.seq,
            sealed.prev,
            stranger,
        ).to_dict()
    elif how == "removed":
        del records[index]
        return
    elif how == "swapped":
        records[index], records[index + 1] = records[index + 1], records[index]
        return
    elif how == "malformed":
        record["seq"] = "x"
    records[index] = record


@pytest.mark.parametrize(
    "how",
    ["intact", "modified", "rehashed", "resigned_by_stranger", "removed", "swapped", "malformed"],
)
@pytest.mark.parametrize("seed", range(3))
def test_parallel_findings_equal_serial(signer, monkeypatch, how: str, seed: int) -> None:
    records = records_of(signer)
    if how != "intact":
        tamper(records, signer, how, random.Random(seed))
    serial, parallel = both(records, [signer.verifier], monkeypatch)
    assert findings(parallel) == findings(serial)
    assert (parallel.ok, parallel.total) == (serial.ok, serial.total)
    assert serial.ok == (how == "intact")


def test_an_untrusted_key_is_found_in_parallel_too(signer, monkeypatch) -> None:
    serial, parallel = both(records_of(signer), [keys.generate().verifier], monkeypatch)
    assert findings(parallel) == findings(serial) and not parallel.ok


# -- a store's records, checked while they are read (`verify.read_json`) ------------------


def fill_store(path: Path, signer: keys.Signer, each: int, batch: int, chains: int = 3) -> None:
    """Chains sealed as the recorder seals them: the last record of each `batch` signed."""
    store = SQLiteStore(path)
    for n in range(chains):
        head = chain.Head(f"w{n}")
        records = [head.seal_next(chain.genesis_draft(signer.verifier.b64), signer)]
        for i in range(1, each):
            draft = Draft(kind="decision", decision="PERMIT", agent="a", tool=f"t{i}")
            records.append(head.seal_next(draft, signer, signed=i % batch == 0 or i == each - 1))
        store.write(records)
        store.publish_anchor(chain.sign_anchor(head, signer))
    store.close()


def rewrite(path: Path, chain_id: str, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit one stored record's JSON in place, as someone with the file but no key would."""
    connection = sqlite3.connect(path)
    with connection:
        (body,) = connection.execute(
            "SELECT body FROM records WHERE chain = ? AND seq = ?", (chain_id, seq)
        ).fetchone()
        data = json.loads(body)
        change(data)
        connection.execute(
            "UPDATE records SET body = ? WHERE chain = ? AND seq = ?",
            (json.dumps(data), chain_id, seq),
        )
    connection.close()


def corrupt_signature(data: dict[str, Any]) -> None:
    signature = data["signature"]
    data["signature"] = ("B" if signature[0] == "A" else "A") + signature[1:]


def change_tool(data: dict[str, Any]) -> None:
    data["tool"] = "other"


def change_and_rehash(data: dict[str, Any]) -> None:
    data["tool"] = "other"
    data["hash"] = chain.record_hash(chain.Record.from_dict(data).body())


def unreadable_seq(data: dict[str, Any]) -> None:
    data["seq"] = "x"


def store_reports(
    path: Path, trusted: list[keys.Verifier], monkeypatch
) -> tuple[verify.Report, verify.Report]:
    """The serial report of the store, and the one from records checked as they were read."""
    store = SQLiteStore(path)
    serial = verify.verify(list(store.iter_records()), store.anchors(), trusted)
    monkeypatch.setattr(verify, "PARALLEL_FROM", 50)
    monkeypatch.setattr(verify, "CHUNK", 16)
    records, sound = verify.read_json(store.iter_bodies(), trusted, parallel=True)
    assert sound is not None and len(sound) == len(records)  # the workers did check them
    parallel = verify.verify(records, store.anchors(), trusted, sound=sound)
    store.close()
    return serial, parallel


@pytest.mark.parametrize(
    ("change", "named"),
    [
        # every signature is still checked, even on a record whose content is intact
        (corrupt_signature, (41, "bad_signature", "signature does not verify")),
        (change_tool, (41, "modified", "content does not match its hash")),
        (change_and_rehash, (41, "bad_signature", "signature does not verify")),
        (unreadable_seq, (None, "malformed", "record #101 cannot be read: record field 'seq'")),
    ],
    ids=["corrupted_signature", "modified", "rehashed", "malformed"],
)
def test_a_tampered_store_record_is_named_as_the_serial_walk_names_it(
    tmp_path: Path, signer, monkeypatch, change, named: tuple[int | None, str, str]
) -> None:
    path = tmp_path / "k.db"
    fill_store(path, signer, each=60, batch=1)
    rewrite(path, "w1", 41, change)
    serial, parallel = store_reports(path, [signer.verifier], monkeypatch)
    assert findings(parallel) == findings(serial)
    (problem,) = parallel.problems
    seq, kind, detail = named
    assert (problem.chain, problem.seq, problem.kind) == ("w1", seq, kind)
    assert problem.detail.startswith(detail)


def test_a_changed_batched_record_is_named_with_the_signature_covering_it(
    tmp_path: Path, signer, monkeypatch
) -> None:
    path = tmp_path / "k.db"
    fill_store(path, signer, each=60, batch=8)  # seq 41-47 batched, 48 signed
    prev = ""
    for seq in range(42, 49):  # changed, then re-hashed and re-linked up to the signed one

        def change(data: dict[str, Any], seq: int = seq) -> None:
            nonlocal prev
            data["tool"] = "other" if seq == 42 else data["tool"]
            data["prev"] = prev or data["prev"]
            data["hash"] = prev = chain.record_hash(chain.Record.from_dict(data).body())

        rewrite(path, "w2", seq, change)
    serial, parallel = store_reports(path, [signer.verifier], monkeypatch)
    assert findings(parallel) == findings(serial)
    (problem,) = parallel.problems
    assert (problem.chain, problem.seq, problem.kind) == ("w2", 48, "bad_signature")
    assert "batched records 41-47 it covers" in problem.detail


def test_an_intact_store_checked_while_read_is_intact(tmp_path: Path, signer, monkeypatch) -> None:
    path = tmp_path / "k.db"
    fill_store(path, signer, each=60, batch=8)
    serial, parallel = store_reports(path, [signer.verifier], monkeypatch)
    assert parallel.ok and parallel.complete and parallel.total == serial.total == 180


def test_a_store_signed_by_another_key_fails_checked_while_read(
    tmp_path: Path, signer, monkeypatch
) -> None:
    path = tmp_path / "k.db"
    fill_store(path, signer, each=60, batch=1)
    serial, parallel = store_reports(path, [keys.generate().verifier], monkeypatch)
    assert findings(parallel) == findings(serial) and not parallel.ok


def test_a_small_store_is_read_without_forking(tmp_path: Path, signer) -> None:
    path = tmp_path / "k.db"
    fill_store(path, signer, each=10, batch=1)
    store = SQLiteStore(path)
    records, sound = verify.read_json(store.iter_bodies(), [signer.verifier], parallel=True)
    store.close()
    assert sound is None and [r.seq for r in records] == [*range(10)] * 3


def test_the_cli_names_a_corrupted_signature_in_a_store_checked_on_every_core(
    tmp_path: Path, signer
) -> None:
    """As a user runs it: a store of PARALLEL_FROM records is checked while it is read."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    signer = keys.load_or_create(data_dir / "signing-key.pem")  # the key verify trusts
    each = verify.PARALLEL_FROM // 2
    fill_store(data_dir / "kubewrit.db", signer, each=each, batch=8, chains=2)
    seq = each // 2 - each // 2 % 8  # a signed record, in the middle of the chain
    rewrite(data_dir / "kubewrit.db", "w1", seq, corrupt_signature)
    result = run_cli("verify", "--data-dir", str(data_dir), "-o", "json", check=False)
    assert result.returncode == 1, result.stderr
    report = orjson.loads(result.stdout)
    assert report["records"] == each + seq + 1  # w0, then w1 up to the bad record
    (bad,) = [c["problem"] for c in report["chains"] if c["problem"]]
    assert (bad["chain"], bad["seq"], bad["kind"]) == ("w1", seq, "bad_signature")


@pytest.mark.parametrize("how", ["intact", "modified", "rehashed", "resigned_by_stranger"])
def test_with_one_core_records_are_checked_in_process_with_the_same_findings(
    signer, monkeypatch, how: str
) -> None:
    records = records_of(signer)
    if how != "intact":
        tamper(records, signer, how, random.Random(7))
    monkeypatch.setattr(verify, "_cores", lambda: 1)
    monkeypatch.setattr(verify, "_Check", None)  # nothing may fork
    serial, parallel = both(records, [signer.verifier], monkeypatch)
    assert findings(parallel) == findings(serial)
    assert serial.ok == (how == "intact")
