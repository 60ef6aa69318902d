"""Offline verification of provenance chains: hashes, links, signatures, anchors, trailers.

The verifier trusts only the public keys it is given. It walks every chain in
the order the records were presented and names the first record that was
modified, removed, inserted or reordered, or the point after a signed head (an
anchor, or an export's trailer) where the chain was truncated. Where no signed
head covers a chain's last records, it says so: a cut there cannot be ruled out.
Malformed input is a finding naming its line or record, never an exception.

A record signed with its batch (`batched: true`, empty signature) is vouched for by
the next signed record of its chain (see `chain`): a change to it, re-hashed
onward, breaks that record's signature, which is named together with the batched
records it covers. Batched records with no signed record, anchor, trailer or
successor after them are a finding of their own (`unsigned`): a writer never
leaves its chain that way. Any other record without its signature is `bad_signature`.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from kubewrit.webhook import chain
from kubewrit.webhook.chain import Anchor, Cut, Record
from kubewrit.webhook.keys import Verifier

if TYPE_CHECKING:
    from kubewrit.webhook.export import Trailer

__all__ = ["ChainReport", "Cut", "Problem", "Report", "chain_order", "read_json", "verify"]


@dataclass(frozen=True)
class Problem:
    chain: str  # "" when the input names no chain
    seq: int | None
    # modified | bad_signature | missing | reordered | inserted | truncated | unknown_key |
    # unsigned | malformed
    kind: str
    detail: str
    line: int | None = None  # the export line it was read from

    def __str__(self) -> str:
        where = [
            f"line {self.line}" if self.line is not None else "",
            f"chain {self.chain}" if self.chain else "",
            f"seq {self.seq}" if self.seq is not None else "",
        ]
        located = " ".join(w for w in where if w)
        return f"{located + ': ' if located else ''}{self.kind}: {self.detail}"


@dataclass
class ChainReport:
    chain: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    anchored_seq: int | None = None
    problem: Problem | None = None
    covered_by: str | None = None  # "trailer" or "anchor": a signed head at the last record
    unsigned_from: int | None = None  # the first of the unsigned records that end the chain
    keys: list[str] = field(default_factory=list)  # ids of the keys its records were signed by

    @property
    def tail_note(self) -> str | None:
        """Plain words when a cut of this chain's tail cannot be ruled out."""
        if self.problem is not None or self.covered_by is not None:
            return None
        if self.anchored_seq is None:
            return "no anchor or trailer covers this chain: a cut tail cannot be ruled out"
        return (
            f"no anchor or trailer covers the records after seq {self.anchored_seq}: "
            f"a cut after seq {self.anchored_seq} cannot be ruled out"
        )


@dataclass
class Report:
    chains: dict[str, ChainReport] = field(default_factory=dict)
    input_problems: list[Problem] = field(default_factory=list)  # tied to no one chain
    trailer: bool = False  # a valid trailer vouched for the export's end

    @property
    def ok(self) -> bool:
        return bool(self.chains) and not self.problems

    @property
    def complete(self) -> bool:
        """Every chain's tail is covered by a signed head: no cut can hide."""
        return self.ok and all(c.covered_by is not None for c in self.chains.values())

    @property
    def problems(self) -> list[Problem]:
        chained = [c.problem for c in self.chains.values() if c.problem is not None]
        return self.input_problems + chained

    @property
    def total(self) -> int:
        return sum(c.records for c in self.chains.values())


def _identify(data: Any) -> tuple[str, int | None]:
    """The chain and seq a malformed record claims, as far as they can be read."""
    if not isinstance(data, Mapping):
        return "", None
    name, seq = data.get("chain"), data.get("seq")
    return (name if isinstance(name, str) else ""), (seq if type(seq) is int else None)


def chain_order(data: Any) -> tuple[str, int]:
    """Sort key putting records in chain, seq order; malformed ones first, never raising."""
    name, seq = _identify(data)
    return name, -1 if seq is None else seq


def _group(
    records: Iterable[Any],
    lines: Sequence[int] | None,
    report: Report,
    sound: bytes | None = None,
    sealed: set[int] | None = None,
) -> dict[str, list[Record]]:
    """Records by chain, in the order given; with `sound` (a flag per position), `sealed`
    gets the id() of each record a worker found sound (see `read_json`)."""
    chains: dict[str, list[Record]] = {}
    for position, data in enumerate(records):
        line = lines[position] if lines is not None else None
        try:
            record = data if type(data) is Record else Record.from_dict(data)
        except ValueError as exc:
            name, seq = _identify(data)
            what = "the record" if line is not None else f"record #{position}"
            problem = Problem(name, seq, "malformed", f"{what} cannot be read: {exc}", line)
            if not name:
                report.input_problems.append(problem)
                continue
            entry = report.chains.setdefault(name, ChainReport(name))
            entry.problem = entry.problem or problem
            continue
        chains.setdefault(record.chain, []).append(record)
        if sound is not None and sealed is not None and sound[position]:
            sealed.add(id(record))
    return chains


def _content_problem(
    name: str, record: Record, verifiers: Mapping[str, Verifier]
) -> Problem | None:
    """What is wrong with one record before its signature: its hash, its key."""
    try:
        digest = chain.record_hash(record.body())
    except ValueError as exc:
        return Problem(name, record.seq, "malformed", f"cannot be hashed: {exc}")
    if digest != record.hash:
        return Problem(name, record.seq, "modified", "content does not match its hash")
    if record.key_id not in verifiers:
        return Problem(
            name, record.seq, "unknown_key", f"signed by key {record.key_id}, not a trusted key"
        )
    return None


def _vouched_by_its_batch(record: Record) -> bool:
    """Signed with its batch: the next signed record of its chain vouches for it (`_walk`)."""
    return bool(record.batched) and not record.signature


def _seal_problem(name: str, record: Record, verifiers: Mapping[str, Verifier]) -> Problem | None:
    """What is wrong with one record's own hash and signature, if anything."""
    problem = _content_problem(name, record, verifiers)
    if problem is not None or _vouched_by_its_batch(record):
        return problem
    if not chain.signature_valid(record, verifiers[record.key_id]):
        return Problem(
            name,
            record.seq,
            "bad_signature",
            "signature does not verify (record re-hashed after a change?)",
        )
    return None


# Checking every record's hash and signature is most of a verification's work, and each
# record's check stands alone, so with many records forked processes check them on every
# core (`_Check`). A forked process inherits the parsed records: nothing is pickled but one
# flag per record. The walk still visits every record in order and, for any record not
# found sound, runs the same check itself, so the findings are exactly the serial ones.
# Each process checks its records' signatures a batch at a time (`_sound_flags`,
# `Verifier.verify_all`): a third of the cost of checking each where the batch verifier
# is built; a batch with a bad signature in it is checked record by record.
#
# Records already parsed (an export, a cluster's list) are checked all at once (`_sound`).
# A store's are checked as they are read (`read_json`): while this process parses the
# next records, the ones parsed since the last hand-off go to a new process whenever fewer
# than one per core are still checking, so reading and parsing no longer come before all
# checking, and nothing is parsed twice.
PARALLEL_FROM = 20_000
CHUNK = 5_000  # records `read_json` parses between looks at the checking processes


class _Check:
    """A forked process checking records[start:end]: one flag each, set if sound."""

    def __init__(
        self, records: list[Any], start: int, end: int, verifiers: Mapping[str, Verifier]
    ) -> None:
        self.start, self.end = start, end
        self.flags: bytes | None = None
        context = multiprocessing.get_context("fork")
        self._results, sender = context.Pipe(duplex=False)
        # The parsed records are left alone by the collector from now on: a process whose
        # collector walked them all would copy every page of them (until `_checking` ends).
        gc.freeze()
        self._process = context.Process(
            target=_check_slice, args=(records, start, end, verifiers, sender), daemon=True
        )
        self._process.start()
        sender.close()

    def done(self) -> bool:
        """Has it answered? (Its answer is read now, so it can exit.)"""
        if self.flags is None and self._results.poll():
            self.result()
        return self.flags is not None

    def result(self) -> bytes:
        if self.flags is None:
            try:
                self.flags = self._results.recv_bytes()
            except EOFError:  # it died (killed?): the walk checks these records itself
                self.flags = bytes(self.end - self.start)
            self._results.close()
            self._process.join()
        return self.flags

    def stop(self) -> None:
        if self.flags is None:
            self._process.terminate()
            self._process.join()
            self._results.close()


def _check_slice(
    records: list[Any], start: int, end: int, verifiers: Mapping[str, Verifier], sender: Any
) -> None:
    """In a forked process: what `_Check` reads."""
    sender.send_bytes(_sound_flags(records[start:end], verifiers))


BATCH = 256  # signatures checked in one batch equation (`Verifier.verify_all`)


def _sound_flags(records: Sequence[Any], verifiers: Mapping[str, Verifier]) -> bytes:
    """One flag per record, set where `_seal_problem` finds nothing wrong with it.

    The signatures of each key are checked in batches: a batch that verifies vouches for
    all its records, and each record of one that does not is checked on its own. Anything
    not a Record is left to the walk (not sound).
    """
    flags = bytearray(len(records))
    signed: dict[str, list[int]] = {}  # key id -> positions whose signature is to be checked
    for position, record in enumerate(records):
        if type(record) is not Record or _content_problem("", record, verifiers) is not None:
            continue
        if _vouched_by_its_batch(record):
            flags[position] = 1
        elif record.signature:
            signed.setdefault(record.key_id, []).append(position)
    for key_id, positions in signed.items():
        verifier = verifiers[key_id]
        for first in range(0, len(positions), BATCH):
            batch = positions[first : first + BATCH]
            batch_records = [records[position] for position in batch]
            if verifier.verify_all(
                [record.signature for record in batch_records],
                [record.hash.encode() for record in batch_records],
            ):
                for position in batch:
                    flags[position] = 1
                continue
            for position, record in zip(batch, batch_records, strict=True):
                flags[position] = chain.signature_valid(record, verifier)
    return bytes(flags)


def _cores() -> int:
    """Processes worth checking records in: 0 where forking is unavailable."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 0


@contextmanager
def _checking() -> Iterator[list[_Check]]:
    """A list for the checks forked inside; any still running on the way out is stopped."""
    checks: list[_Check] = []
    try:
        yield checks
    finally:
        for check in checks:
            check.stop()
        gc.unfreeze()


def _split(
    records: list[Any], start: int, parts: int, verifiers: Mapping[str, Verifier]
) -> list[_Check]:
    """records[start:] checked in `parts` processes of equal shares."""
    step = max(1, -(-(len(records) - start) // parts))
    return [
        _Check(records, first, min(first + step, len(records)), verifiers)
        for first in range(start, len(records), step)
    ]


def _sound(records: list[Record], verifiers: Mapping[str, Verifier]) -> bytes | None:
    """One flag per record: hash and signature verified, on every core; None if not worth it."""
    if len(records) < PARALLEL_FROM:
        return None
    cores = _cores()
    if cores < 2:  # no core to spare, but batches of signatures still cost less
        return _sound_flags(records, verifiers)
    with _checking() as checks:
        # More processes than cores: one whose share is slower to check is not waited for alone.
        checks.extend(_split(records, 0, cores * 4, verifiers))
        return b"".join(check.result() for check in checks)


def _parse(body: str | bytes) -> Any:
    """A record from its JSON text; what is not one, as parsed, for `verify` to name."""
    data = orjson.loads(body)
    try:
        return Record.from_dict(data)
    except ValueError:
        return data


def read_json(
    bodies: Iterable[str | bytes], trusted: Iterable[Verifier], parallel: bool = False
) -> tuple[list[Any], bytes | None]:
    """Parse records' JSON text (as a store holds it) for `verify`, and with `parallel`,
    check each record's hash and signature on every core meanwhile.

    Returns, in order, each Record (or, where the text is not one, the JSON value, which
    `verify` names), and, if they were checked, one flag per record: `verify`'s `sound`.
    `parallel` forks: only for a caller that runs no other threads (the CLI), never
    inside a server. Text that is not JSON raises orjson's error, a ValueError.
    """
    texts = iter(bodies)
    records = [_parse(body) for body in itertools.islice(texts, PARALLEL_FROM)]
    cores = _cores() if parallel and len(records) == PARALLEL_FROM else 0
    if cores < 2:
        records.extend(map(_parse, texts))
        return records, None
    verifiers = {v.key_id: v for v in trusted}
    handed = 0  # records[:handed] are being checked, or were
    with _checking() as checks:
        while True:
            # A share at least a quarter of what is parsed: each fork (and exit) of a process
            # this large costs time in the kernel, so there are tens of them, not hundreds.
            share = len(records) - handed >= max(CHUNK, len(records) // 4)
            if share and sum(not c.done() for c in checks) < cores:
                checks.append(_Check(records, handed, len(records), verifiers))
                handed = len(records)
            chunk = list(map(_parse, itertools.islice(texts, CHUNK)))
            if not chunk:
                break
            records.extend(chunk)
        if len(records) > handed:  # the last ones, on every core, so no one waits alone
            checks.extend(_split(records, handed, cores, verifiers))
        return records, b"".join(check.result() for check in checks)


def _walk(
    name: str,
    records: list[Record],
    cut: Cut | None,
    verifiers: Mapping[str, Verifier],
    entry: ChainReport,
    sealed: set[int] | None = None,
) -> Problem | None:
    expected_seq, expected_prev = (cut.seq, cut.prev) if cut else (0, chain.GENESIS_PREV)
    for position, record in enumerate(records):
        entry.records += 1
        if sealed is None or id(record) not in sealed:
            problem = _seal_problem(name, record, verifiers)
            if problem is not None:
                if problem.kind == "bad_signature" and entry.unsigned_from is not None:
                    problem = Problem(
                        name,
                        record.seq,
                        "bad_signature",
                        f"signature does not verify: this record or one of the batched "
                        f"records {entry.unsigned_from}-{record.seq - 1} it covers was "
                        "changed and re-hashed",
                    )
                return problem
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
        if record.key_id not in entry.keys:
            entry.keys.append(record.key_id)
        if not record.batched or record.signature:
            entry.unsigned_from = None
        elif entry.unsigned_from is None:
            entry.unsigned_from = record.seq
        entry.first_seq = record.seq if entry.first_seq is None else entry.first_seq
        entry.last_seq = record.seq
    return None


def _check_head(
    name: str, records: list[Record], seq: int, digest: str, cut: Cut | None, what: str
) -> Problem | None:
    """Do the records reach the signed head (seq, hash) `what` names, and agree with it?"""
    at = next((r for r in records if r.seq == seq), None)
    if at is None:
        last = records[-1].seq if records else (cut.seq if cut else 0) - 1
        if seq > last:
            return Problem(
                name,
                last + 1,
                "truncated",
                f"{what} says the chain reached seq {seq}, records end at {last}",
            )
        if cut is not None and seq < cut.seq:
            return None  # signed before the retention cut: exported, verified from the export
        return Problem(name, seq, "missing", f"the record {what} names is missing")
    if at.hash != digest:
        return Problem(name, seq, "modified", f"record differs from the head {what} names")
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
    return _check_head(name, records, anchor.seq, anchor.hash, cut, "the anchor")


def _check_trailer_head(
    name: str, records: list[Record], head: tuple[int, str] | None, cut: Cut | None
) -> Problem | None:
    if head is None:
        seq = records[0].seq if records else None
        return Problem(name, seq, "inserted", "a chain the export's trailer does not name")
    seq, digest = head
    problem = _check_head(name, records, seq, digest, cut, "the export's trailer")
    if problem is None and records and records[-1].seq > seq:
        return Problem(
            name, seq + 1, "inserted", f"records after seq {seq}, the head the trailer names"
        )
    return problem


def _trusted_trailer(
    trailer: Trailer | None, verifiers: Mapping[str, Verifier], report: Report, total: int
) -> Trailer | None:
    if trailer is None:
        return None
    verifier = verifiers.get(trailer.key_id)
    if verifier is None or not trailer.valid(verifier):
        report.input_problems.append(
            Problem(
                "",
                None,
                "bad_signature",
                "the export's trailer signature does not verify",
                trailer.line,
            )
        )
        return None
    if trailer.records != total:
        kind = "truncated" if total < trailer.records else "inserted"
        report.input_problems.append(
            Problem(
                "",
                None,
                kind,
                f"the trailer counts {trailer.records} records, the export holds {total}",
            )
        )
    report.trailer = True
    return trailer


def _cut_trusted(name: str, cut: Cut, verifiers: Mapping[str, Verifier]) -> bool:
    verifier = verifiers.get(cut.key_id)
    return verifier is not None and chain.cut_valid(name, cut, verifier)


def _check_successions(
    by_chain: Mapping[str, list[Record]], cuts: Mapping[str, Cut], report: Report
) -> None:
    """A restarted writer's new chain states, signed, where its previous chain ended."""
    for name, recs in by_chain.items():
        first = recs[0] if recs else None
        if first is None or first.kind != "genesis" or report.chains[name].problem is not None:
            continue
        follows = chain.parse_genesis(first.message).follows
        if follows is None:
            continue
        before, seq, digest = follows
        entry = report.chains.setdefault(before, ChainReport(before))
        if entry.problem is not None:
            continue
        previous = by_chain.get(before, [])
        what = f"chain {name}'s genesis"
        entry.problem = _check_head(before, previous, seq, digest, cuts.get(before), what)
        if entry.problem is None and previous and previous[-1].seq > seq:
            entry.problem = Problem(
                before, seq + 1, "inserted", f"records after seq {seq}, where {what} says it ended"
            )
        if entry.problem is None and entry.last_seq == seq and entry.covered_by is None:
            entry.covered_by = "successor"


def verify(
    records: Iterable[Any],
    anchors: Iterable[Anchor],
    trusted: Iterable[Verifier],
    cuts: Mapping[str, Cut] | None = None,
    trailer: Trailer | None = None,
    problems: Iterable[Problem] = (),
    lines: Sequence[int] | None = None,
    parallel: bool = False,
    sound: bytes | None = None,
) -> Report:
    """Check `records` (dicts, as stored or exported, or what `read_json` made of a store's
    text; `lines` says where each was read).

    `problems` are findings the caller met while reading the input; they fail the report.
    `parallel` checks records on every core in forked processes: only for a caller that
    runs no other threads (the CLI), never inside a server. `sound`, from `read_json`,
    says which records were already found sound (one flag per record, in order).
    """
    report = Report(input_problems=list(problems))
    cuts = cuts or {}
    verifiers = {v.key_id: v for v in trusted}
    records = list(records)
    sealed: set[int] | None = None if sound is None else set()
    by_chain = _group(records, lines, report, sound, sealed)
    signed = _trusted_trailer(trailer, verifiers, report, len(records))
    anchors_of: dict[str, list[Anchor]] = {}
    for anchor in anchors:
        anchors_of.setdefault(anchor.chain, []).append(anchor)
    names = set(by_chain) | set(anchors_of) | set(signed.heads if signed else ())
    if parallel and sealed is None:
        flat = [r for rs in by_chain.values() for r in rs]
        flags = _sound(flat, verifiers)
        if flags is not None:
            sealed = {id(record) for record, flag in zip(flat, flags, strict=True) if flag}
    for name in sorted(names | set(report.chains)):
        entry = report.chains.setdefault(name, ChainReport(name))
        recs = by_chain.get(name, [])
        chain_anchors = sorted(anchors_of.get(name, []), key=lambda a: a.seq)
        entry.anchored_seq = chain_anchors[-1].seq if chain_anchors else None
        cut = cuts.get(name)
        if cut is not None and not _cut_trusted(name, cut, verifiers):
            entry.problem = entry.problem or Problem(
                name,
                cut.seq,
                "bad_signature",
                f"the retention cut at seq {cut.seq} is not signed by a trusted key: "
                "records before it may have been deleted",
            )
            cut = None
        if entry.problem is None:
            problem = _walk(name, recs, cut, verifiers, entry, sealed)
        else:  # already unreadable: say what there is, without walking it
            problem, entry.records = entry.problem, len(recs)
            entry.first_seq = recs[0].seq if recs else None
            entry.last_seq = recs[-1].seq if recs else None
        for anchor in chain_anchors:
            problem = problem or _check_anchor(name, recs, anchor, cut, verifiers)
        if signed is not None:
            problem = problem or _check_trailer_head(name, recs, signed.heads.get(name), cut)
        entry.problem = problem
        if problem is None and signed is not None:
            entry.covered_by = "trailer"
        elif problem is None and entry.anchored_seq == entry.last_seq is not None:
            entry.covered_by = "anchor"
    _check_successions(by_chain, cuts, report)
    for entry in report.chains.values():
        if entry.problem is None and entry.unsigned_from is not None and not entry.covered_by:
            entry.problem = Problem(
                entry.chain,
                entry.unsigned_from,
                "unsigned",
                f"records {entry.unsigned_from}-{entry.last_seq} end the chain with no signed "
                "record, anchor or trailer after them: a change to them cannot be ruled out",
            )
    return report
