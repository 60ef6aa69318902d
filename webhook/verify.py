"""Offline verification of provenance chains: hashes, links, signatures, anchors.

The verifier trusts only the public keys it is given. It walks every chain in
the order the records were presented and names the first record that was
modified, removed, inserted or reordered, or the point after an anchored head
where the chain was truncated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubewrit.webhook import chain
from kubewrit.webhook.chain import Anchor, Record
from kubewrit.webhook.keys import Verifier


@dataclass(frozen=True)
class Problem:
    chain: str
    seq: int
    # modified | bad_signature | missing | reordered | inserted | truncated | unknown_key | malformed
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"chain {self.chain} seq {self.seq}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Cut:
    """Where retention cut a chain: records before `seq` were exported, `prev` links across."""

    seq: int
    prev: str


@dataclass
class ChainReport:
    chain: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    anchored_seq: int | None = None
    problem: Problem | None = None


@dataclass
class Report:
    chains: dict[str, ChainReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.chains) and all(c.problem is None for c in self.chains.values())

    @property
    def problems(self) -> list[Problem]:
        return [c.problem for c in self.chains.values() if c.problem is not None]

    @property
    def total(self) -> int:
        return sum(c.records for c in self.chains.values())


def _group(records: Iterable[Mapping[str, Any]], report: Report) -> dict[str, list[Record]]:
    chains: dict[str, list[Record]] = {}
    for position, data in enumerate(records):
        name = str(data.get("chain", ""))
        try:
            record = Record.from_dict(dict(data))
        except (TypeError, ValueError) as exc:
            entry = report.chains.setdefault(name, ChainReport(name))
            entry.problem = entry.problem or Problem(
                name,
                int(data.get("seq", -1)),
                "malformed",
                f"record #{position} cannot be read: {exc}",
            )
            continue
        chains.setdefault(record.chain, []).append(record)
    return chains


def _walk(
    name: str,
    records: list[Record],
    cut: Cut | None,
    verifiers: Mapping[str, Verifier],
    entry: ChainReport,
) -> Problem | None:
    expected_seq, expected_prev = (cut.seq, cut.prev) if cut else (0, chain.GENESIS_PREV)
    for position, record in enumerate(records):
        entry.records += 1
        if chain.record_hash(record.body()) != record.hash:
            return Problem(name, record.seq, "modified", "content does not match its hash")
        verifier = verifiers.get(record.key_id)
        if verifier is None:
            return Problem(
                name, record.seq, "unknown_key", f"signed by key {record.key_id}, not a trusted key"
            )
        if not chain.signature_valid(record, verifier):
            return Problem(
                name,
                record.seq,
                "bad_signature",
                "signature does not verify (record re-hashed after a change?)",
            )
        if record.seq < expected_seq:
            kind = (
                "inserted"
                if record.seq == expected_seq - 1 or record.prev == expected_prev
                else "reordered"
            )
            return Problem(
                name, record.seq, kind, f"seq {record.seq} appears where seq {expected_seq} belongs"
            )
        if record.seq > expected_seq:
            if any(later.seq == expected_seq for later in records[position + 1 :]):
                return Problem(
                    name,
                    record.seq,
                    "reordered",
                    f"seq {record.seq} appears before seq {expected_seq}",
                )
            missing = (
                f"{expected_seq}"
                if record.seq == expected_seq + 1
                else f"{expected_seq}-{record.seq - 1}"
            )
            return Problem(
                name,
                expected_seq,
                "missing",
                f"record(s) {missing} missing before seq {record.seq}",
            )
        if record.prev != expected_prev:
            return Problem(name, record.seq, "inserted", "link to the previous record is broken")
        expected_seq, expected_prev = record.seq + 1, record.hash
        entry.first_seq = record.seq if entry.first_seq is None else entry.first_seq
        entry.last_seq = record.seq
    return None


def _check_anchor(
    name: str,
    records: list[Record],
    anchor: Anchor,
    cut: Cut | None,
    verifiers: Mapping[str, Verifier],
) -> Problem | None:
    verifier = verifiers.get(anchor.key_id)
    if verifier is None or not chain.anchor_valid(anchor, verifier):
        return Problem(name, anchor.seq, "bad_signature", "anchor signature does not verify")
    at = next((r for r in records if r.seq == anchor.seq), None)
    if at is None:
        last = records[-1].seq if records else (cut.seq if cut else 0) - 1
        if anchor.seq > last:
            return Problem(
                name,
                last + 1,
                "truncated",
                f"anchor says the chain reached seq {anchor.seq}, records end at {last}",
            )
        if cut is not None and anchor.seq < cut.seq:
            return None  # anchored before the retention cut: exported, verified from the export
        return Problem(name, anchor.seq, "missing", "the anchored record is missing")
    if at.hash != anchor.hash:
        return Problem(name, anchor.seq, "modified", "record differs from the anchored head")
    return None


def verify(
    records: Iterable[Mapping[str, Any]],
    anchors: Iterable[Anchor],
    trusted: Iterable[Verifier],
    cuts: Mapping[str, Cut] | None = None,
) -> Report:
    report = Report()
    cuts = cuts or {}
    verifiers = {v.key_id: v for v in trusted}
    by_chain = _group(records, report)
    anchor_of = {a.chain: a for a in anchors}
    for name in sorted(set(by_chain) | set(anchor_of)):
        entry = report.chains.setdefault(name, ChainReport(name))
        recs = by_chain.get(name, [])
        anchor = anchor_of.get(name)
        entry.anchored_seq = anchor.seq if anchor else None
        cut = cuts.get(name)
        problem = entry.problem or _walk(name, recs, cut, verifiers, entry)
        if problem is None and anchor is not None:
            problem = _check_anchor(name, recs, anchor, cut, verifiers)
        entry.problem = problem
    return report
