"""Verification on every core finds exactly what the serial walk finds.

Many records are checked by forked processes ahead of the walk; these tests tamper
with records in each way the verifier names and compare the parallel report with the
serial one, finding for finding.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from kubewrit.webhook import chain, keys, verify
from kubewrit.webhook.chain import Draft


@pytest.fixture(scope="module")
def signer() -> keys.Signer:
    return keys.generate()


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
