"""The export file: JSON Lines a verifier checks offline, and can tell when it was cut.

    {"export": {"format": "kubewrit-export/1"}}             the header, first
    {"chain": ..., "seq": ..., ...}                          every record, chain and seq order
    {"anchor": {...}}                                        the store's published heads
    {"trailer": {"heads": {chain: {"seq", "hash"}}, "records", "time", "key_id", "signature"}}

The trailer, last, is signed by the writer's key and names each chain's head at the
time of the export: a chain that ends before its head was cut, and a header with no
trailer means the file itself was cut. Lines that are ActionRecord specs (as retention
writes them) are read as records too. Reading never raises on bad input: every line
that is not what it should be is a finding naming the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kubewrit.webhook.chain import Anchor, body_signed, sign_body, timestamp
from kubewrit.webhook.keys import Signer, Verifier
from kubewrit.webhook.verify import Problem

FORMAT = "kubewrit-export/1"


@dataclass(frozen=True)
class Trailer:
    """The writer's signed word on where each chain ended when it was exported."""

    heads: Mapping[str, tuple[int, str]]  # chain -> (seq, hash) of its last record
    records: int
    time: str
    key_id: str
    signature: str = ""
    line: int | None = field(default=None, compare=False)  # where it was read; not signed

    def body(self) -> dict[str, Any]:
        return {
            "heads": {c: {"seq": s, "hash": h} for c, (s, h) in sorted(self.heads.items())},
            "records": self.records,
            "time": self.time,
            "key_id": self.key_id,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "signature": self.signature}

    def valid(self, verifier: Verifier) -> bool:
        return body_signed(self.body(), self.signature, verifier)

    @classmethod
    def from_dict(cls, data: Any) -> Trailer:
        """Raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("the trailer must be a JSON object")
        expected = {"heads", "records", "time", "key_id", "signature"}
        if set(data) != expected:
            raise ValueError(f"the trailer must have exactly the fields {sorted(expected)}")
        heads, records = data["heads"], data["records"]
        if not isinstance(heads, dict):
            raise ValueError("trailer heads must be an object")
        parsed: dict[str, tuple[int, str]] = {}
        for chain, head in heads.items():
            seq = head.get("seq") if isinstance(head, dict) else None
            digest = head.get("hash") if isinstance(head, dict) else None
            if not (type(seq) is int and isinstance(digest, str) and len(head) == 2):
                raise ValueError(f"trailer head of chain {chain!r} must be {{seq, hash}}")
            parsed[chain] = (seq, digest)
        if type(records) is not int:
            raise ValueError("trailer records must be an integer")
        for name in ("time", "key_id", "signature"):
            if not isinstance(data[name], str):
                raise ValueError(f"trailer {name} must be a string")
        return cls(parsed, records, data["time"], data["key_id"], data["signature"])


def sign_trailer(heads: Mapping[str, tuple[int, str]], records: int, signer: Signer) -> Trailer:
    unsigned = Trailer(dict(heads), records, timestamp(), signer.key_id)
    return replace(unsigned, signature=sign_body(unsigned.body(), signer))


def lines(
    records: Iterable[dict[str, Any]], anchors: Iterable[Anchor], signer: Signer
) -> Iterator[dict[str, Any]]:
    """The export, line by line: header, records, anchors, then the signed trailer."""
    yield {"export": {"format": FORMAT}}
    heads: dict[str, tuple[int, str]] = {}
    count = 0
    for record in records:
        heads[record["chain"]] = (record["seq"], record["hash"])
        count += 1
        yield record
    for anchor in anchors:
        yield {"anchor": anchor.to_dict()}
    yield {"trailer": sign_trailer(heads, count, signer).to_dict()}


@dataclass
class Export:
    """What an export file holds, and every line in it that is not what it should be."""

    records: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line each record was read from
    anchors: list[Anchor] = field(default_factory=list)
    trailer: Trailer | None = None
    header: bool = False
    problems: list[Problem] = field(default_factory=list)


def _problem(line: int, kind: str, detail: str) -> Problem:
    return Problem("", None, kind, detail, line=line)


def read(text_lines: Iterable[str]) -> Export:
    """Parse an export; never raises on what the lines hold."""
    found = Export()
    last = 0
    trailer_line = 0
    for number, line in enumerate(text_lines, start=1):
        if not line.strip():
            continue
        last = number
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as exc:
            found.problems.append(_problem(number, "malformed", f"not a JSON line: {exc}"))
            continue
        if not isinstance(item, dict):
            found.problems.append(_problem(number, "malformed", "not a JSON object"))
            continue
        if trailer_line:
            found.problems.append(
                _problem(number, "inserted", f"a line after the trailer (line {trailer_line})")
            )
            continue
        if _kind(item) == "trailer":
            trailer_line = number
        _take(found, number, item)
    if found.header and not trailer_line:
        found.problems.append(
            _problem(
                last + 1,
                "truncated",
                f"the export ends at line {last} without the trailer its header promises: "
                "it was cut",
            )
        )
    return found


def _kind(item: dict[str, Any]) -> str:
    """header, anchor or trailer: an object with that one key; anything else is a record."""
    if len(item) == 1:
        (key,) = item
        return {"export": "header", "anchor": "anchor", "trailer": "trailer"}.get(key, "record")
    return "record"


def _take(found: Export, number: int, item: dict[str, Any]) -> None:
    kind = _kind(item)
    if kind == "header":
        header = item["export"]
        if number != 1 or found.records or found.anchors:
            found.problems.append(_problem(number, "malformed", "a header that is not line 1"))
        elif not isinstance(header, dict) or header.get("format") != FORMAT:
            found.problems.append(
                _problem(number, "malformed", f"unknown export format (expected {FORMAT})")
            )
        else:
            found.header = True
        return
    if kind == "anchor":
        try:
            found.anchors.append(Anchor.from_dict(item["anchor"]))
        except ValueError as exc:
            found.problems.append(_problem(number, "malformed", str(exc)))
        return
    if kind == "trailer":
        try:
            found.trailer = replace(Trailer.from_dict(item["trailer"]), line=number)
        except ValueError as exc:
            found.problems.append(_problem(number, "malformed", str(exc)))
        return
    if "keyId" in item:  # an ActionRecord spec, as retention exports them
        from kubewrit.webhook.kube import records as kube_records

        item = kube_records.from_spec(item)
    found.records.append(item)
    found.lines.append(number)
