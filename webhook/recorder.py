"""The writer of one chain: sequencing, signing and group commit on one thread.

Callers from any thread or event loop submit drafts and wait for the durable
record. One thread owns the chain head, so records never contend for sequence
numbers, and every batch that queued up while the previous write was in flight
is made durable by a single commit (group commit): concurrency does not
serialize on fsync.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from kubewrit.webhook import chain
from kubewrit.webhook.chain import Anchor, Draft, Head, Record
from kubewrit.webhook.keys import Signer

log = logging.getLogger(__name__)

MAX_BATCH = 256


class RecordUnavailable(RuntimeError):
    """The record could not be made durable; the decision must be DENY."""


class DuplicateRequest(Exception):
    """Another writer has already recorded a decision for these drafts' request ids.

    Raised by a ledger shared by several writers before it writes anything; the
    recorder refuses those drafts and writes the rest, and `requests.Requests` answers
    the refused callers with the decision the other writer recorded.
    """

    def __init__(self, indexes: Sequence[int]) -> None:
        super().__init__(f"request id already decided (drafts {list(indexes)})")
        self.indexes = list(indexes)


class PartialWrite(Exception):
    """The first `written` records of a batch are durable, the rest are not."""

    def __init__(self, written: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.written = written
        self.cause = cause


class Ledger(Protocol):
    """Where a chain's records and anchors live (SQLite, or ActionRecords in Kubernetes).

    `atomic`: a batch is durable all or nothing. Then the recorder signs only each batch's
    last record (and any `chain.must_sign`), which vouches for the rest through their links;
    a ledger that may keep part of a batch (`PartialWrite`) gets every record signed.
    """

    atomic: bool

    def head(self, chain_id: str) -> Record | None: ...

    def after(self, chain_id: str, seq: int) -> list[Record]:
        """The chain's stored records with a greater `seq`, as stored (read after a failed write)."""
        ...

    def write(self, records: Sequence[Record]) -> None:
        """Make `records` durable, in order. All or nothing, or PartialWrite for a prefix."""
        ...

    def remove(self, records: Sequence[Record]) -> None:
        """Delete stored records that do not continue the chain (gone already is fine).

        Records past the head that are not this writer's, or past a hole it cannot close.
        Only a ledger others can write to, or that keeps part of a batch, ever has such
        records; an atomic one raises `Unsupported`, and the recorder stays in doubt.
        """
        ...

    def publish_anchor(self, anchor: Anchor) -> None: ...


@dataclass
class AnchorPolicy:
    every_records: int = 100
    every_seconds: float = 10.0


@dataclass
class _Job:
    """One draft and who waits for its record: a thread (`future`) or an event loop."""

    draft: Draft
    future: Future[Record] | None = None
    waiter: asyncio.Future[Record] | None = None
    loop: asyncio.AbstractEventLoop | None = None


def _settle(outcomes: list[tuple[asyncio.Future[Record], Record | BaseException]]) -> None:
    """On the waiters' loop: one call per batch, however many records it held."""
    for waiter, outcome in outcomes:
        if waiter.done():  # the request went away meanwhile; its record stands
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)


def _answer(jobs: list[_Job], outcomes: Sequence[Record | BaseException] | BaseException) -> None:
    """Hand each job its record (or error): futures directly, event loops once per batch."""
    per_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Record], Any]]] = {}
    for index, job in enumerate(jobs):
        outcome = outcomes if isinstance(outcomes, BaseException) else outcomes[index]
        if job.future is not None:
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
        elif job.waiter is not None and job.loop is not None:
            per_loop.setdefault(job.loop, []).append((job.waiter, outcome))
    for loop, settled in per_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # that loop has closed: nobody waits any more
            log.debug("event loop closed before %d record(s) could be handed over", len(settled))


class Recorder:
    def __init__(
        self,
        ledger: Ledger,
        signer: Signer,
        chain_id: str,
        anchors: AnchorPolicy | None = None,
        public_key_b64: str = "",
        genesis: Draft | None = None,
    ) -> None:
        self.ledger = ledger
        self.signer = signer
        self.chain_id = chain_id
        self.anchors = anchors or AnchorPolicy()
        self._public_key_b64 = public_key_b64
        self._genesis = genesis or chain.genesis_draft(public_key_b64)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._head = Head(chain_id)
        self._anchored_seq = -1
        self._anchored_at = time.monotonic()
        self.batches = 0
        # After a failed write the durable head is in doubt: a write whose answer was lost
        # may have landed, and a batch may have landed with a hole. Until `_settle` has
        # read the store, these are the records sealed past the head that are not known
        # to be durable; None when the head is certain.
        self._doubt: list[Record] | None = None

    @property
    def head(self) -> Head:
        return self._head

    def start(self) -> None:
        """Resume the chain where the ledger left it, or begin it with a genesis record."""
        existing = self.ledger.head(self.chain_id)
        if existing is not None:
            self._head = Head(self.chain_id, existing.seq, existing.hash)
        else:
            genesis = self._head.seal_next(self._genesis, self.signer)
            self.ledger.write([genesis])
        self._thread = threading.Thread(
            target=self._run, name=f"recorder-{self.chain_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._thread = None

    def submit(self, draft: Draft) -> Future[Record]:
        future: Future[Record] = Future()
        if self._thread is None:
            future.set_exception(RecordUnavailable("recorder is not running"))
            return future
        self._queue.put(_Job(draft, future=future))
        return future

    async def record(self, draft: Draft) -> Record:
        """The durable record of `draft`; the loop is woken once per batch, not per record."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Record] = loop.create_future()
        if self._thread is None:
            raise RecordUnavailable("recorder is not running")
        self._queue.put(_Job(draft, waiter=waiter, loop=loop))
        return await waiter

    def record_sync(self, draft: Draft, timeout: float = 10.0) -> Record:
        return self.submit(draft).result(timeout=timeout)

    def _drain(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, stopping = [first], False
        while len(jobs) < MAX_BATCH:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stopping = True
                break
            jobs.append(job)
        return jobs, stopping

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self._seconds_to_anchor())
            except queue.Empty:
                self._resettle()
                self._maybe_anchor()
                continue
            if first is None:
                break
            jobs, stopping = self._drain(first)
            self._commit(jobs)
            self._maybe_anchor()
        self._resettle()
        if self._doubt is not None:
            log.error(
                "chain %s stops in doubt: records past seq %d may stand past a hole",
                self.chain_id,
                self._head.seq,
            )
        self._maybe_anchor(force=True)

    def _resettle(self) -> None:
        """In doubt, try again: the hole closes when the store is back, not at the next
        decision. Never raises; the head stays in doubt until it succeeds."""
        if self._doubt is None:
            return
        try:
            self._settle()
        except Exception as exc:
            log.warning("chain %s stays in doubt until the store answers: %s", self.chain_id, exc)

    def _commit(self, jobs: list[_Job]) -> None:
        if self._doubt is not None:
            try:
                self._settle()
            except Exception as exc:
                _answer(jobs, RecordUnavailable(f"record store unavailable: {exc}"))
                return
        before = Head(self._head.chain, self._head.seq, self._head.hash)
        final = len(jobs) - 1
        records = [
            self._head.seal_next(
                job.draft,
                self.signer,
                signed=not self.ledger.atomic or index == final or chain.must_sign(job.draft),
            )
            for index, job in enumerate(jobs)
        ]
        written, failure = len(records), None
        try:
            self.ledger.write(records)
        except DuplicateRequest as taken:  # nothing was written: refuse those, seal the rest again
            refused = set(taken.indexes)
            _answer([jobs[i] for i in sorted(refused)], DuplicateRequest(sorted(refused)))
            self._head = before
            rest = [job for i, job in enumerate(jobs) if i not in refused]
            if rest:
                self._commit(rest)
            return
        except PartialWrite as partial:
            written, failure = partial.written, partial.cause
        except Exception as exc:
            written, failure = 0, exc
        self.batches += 1
        if failure is None:
            _answer(jobs, records)
            return
        log.error(
            "cannot persist %d record(s) of chain %s: %s",
            len(records) - written,
            self.chain_id,
            failure,
        )
        # The head is the last acknowledged record, in doubt until `_settle` reads the store.
        last = records[written - 1] if written else None
        self._head = Head(before.chain, last.seq, last.hash) if last else before
        self._doubt = records[written:]
        error = RecordUnavailable(f"record store unavailable: {failure}")
        _answer(jobs, [*records[:written], *[error] * (len(jobs) - written)])
        self._resettle()

    def _settle(self) -> None:
        """After a failed write: continue after what landed, and never past a hole.

        Writes whose answers were lost may have landed, and a batch whose records are
        created one by one may have landed with a hole (seq k refused, k+1 created). A
        hole is closed with the very record sealed for it, still held here, so what
        landed after it links on; the chain then goes on from the last record that
        continues it as stored (`chain.continuation`). Anything else stored past that
        (no record of ours to close its hole, or not ours at all) is removed. Raises while
        the store cannot say, cannot close or cannot remove: the head stays in doubt and
        every decision meanwhile is RecordUnavailable.
        """
        known, doubt = self._head, self._doubt or []
        stored = self.ledger.after(self.chain_id, known.seq)
        present = {record.seq for record in stored}
        top = max(present, default=known.seq)
        holes = [record for record in doubt if record.seq < top and record.seq not in present]
        if holes:
            self.ledger.write(holes)
            log.warning(
                "chain %s: seq %s created again to close the hole before seq %d",
                self.chain_id,
                ", ".join(str(r.seq) for r in holes),
                top,
            )
            stored = [*stored, *holes]  # now stored as sealed: no second read of the chain
        head, strays = chain.continuation(known, stored, self.signer.verifier)
        if strays:
            self.ledger.remove(strays)
            log.warning(
                "chain %s: removed %d record(s) past seq %d that do not continue it (seq %s)",
                self.chain_id,
                len(strays),
                head.seq,
                ", ".join(str(r.seq) for r in strays),
            )
        if head.seq > known.seq:
            log.warning(
                "chain %s: seq %d..%d are stored although their write failed; continuing after",
                self.chain_id,
                known.seq + 1,
                head.seq,
            )
        self._head = head
        self._doubt = None

    def _seconds_to_anchor(self) -> float:
        elapsed = time.monotonic() - self._anchored_at
        return max(0.05, self.anchors.every_seconds - elapsed)

    def _maybe_anchor(self, force: bool = False) -> None:
        unanchored = self._head.seq - self._anchored_seq
        if unanchored <= 0:
            self._anchored_at = time.monotonic()
            return
        due = (
            force
            or unanchored >= self.anchors.every_records
            or time.monotonic() - self._anchored_at >= self.anchors.every_seconds
        )
        if not due:
            return
        self.publish_anchor()

    def publish_anchor(self) -> Anchor | None:
        """Sign and publish the durable head (the recorder's thread owns it: no store read)."""
        head = self._head
        if head.seq < 0:
            return None
        anchor = chain.sign_anchor(head, self.signer)
        try:
            self.ledger.publish_anchor(anchor)
        except Exception as exc:
            log.warning("cannot publish anchor for chain %s: %s", self.chain_id, exc)
            return None
        self._anchored_seq = head.seq
        self._anchored_at = time.monotonic()
        return anchor
