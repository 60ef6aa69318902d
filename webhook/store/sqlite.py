"""The embedded store: records, anchors and approvals in one SQLite file.

Records and anchors are written and read as JSON by orjson (they hold strings, small
integers and booleans); approvals by the standard library, because they carry the
agent's arguments, whose integers may exceed the 64 bits orjson accepts.

WAL journal with synchronous=FULL, so a commit is durable when it returns.
What a permitted record drew from each limit is also written to `charges`, in the
record's own transaction: the budgets are reloaded from there (see `budget`), and
`kubewrit verify --limits` recounts them from the signed records themselves.
The recorder thread owns the write connection for records (group commit);
approvals and reads use their own connections. A unique index allows one
decision record per (agent, request_id): the database itself refuses a second.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from kubewrit.webhook import chain
from kubewrit.webhook.approval import Approval, Sealer
from kubewrit.webhook.backend import RecordQuery, counted
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.chain import Anchor, Record
from kubewrit.webhook.decision import Phase
from kubewrit.webhook.errors import Unsupported
from kubewrit.webhook.policy.history import Facts, Recent
from kubewrit.webhook.policy.limits import Limit
from kubewrit.webhook.requests import RequestKey
from kubewrit.webhook.slices import BudgetState

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    chain TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    agent TEXT NOT NULL,
    tool TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    request_id TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX IF NOT EXISTS records_by_time ON records (time);
CREATE INDEX IF NOT EXISTS records_by_request ON records (agent, request_id);
CREATE TABLE IF NOT EXISTS anchors (
    chain TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    phase TEXT NOT NULL,
    agent TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_by_phase ON approvals (phase, created_at);
CREATE INDEX IF NOT EXISTS records_by_agent_tool ON records (agent, tool, time);
CREATE TABLE IF NOT EXISTS charges (
    limit_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    time REAL NOT NULL,
    amount TEXT NOT NULL,
    chain TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_by_limit ON charges (limit_id, scope, time);
CREATE TABLE IF NOT EXISTS budgets (
    limit_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (limit_id, scope)
);
"""
ONE_DECISION_PER_REQUEST = """
CREATE UNIQUE INDEX IF NOT EXISTS records_one_decision_per_request
ON records (agent, request_id) WHERE kind = 'decision' AND request_id IS NOT NULL
"""


def connect(path: Path | str) -> sqlite3.Connection:
    connection = sqlite3.connect(
        str(path), timeout=30, check_same_thread=False, isolation_level=None
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


class SQLiteStore:
    """recorder.Ledger, approval.ApprovalStore, requests.RequestStore and RecordReader."""

    atomic = True  # a batch is one transaction

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = connect(self.path)
        self._writer.executescript(SCHEMA)
        try:
            self._writer.execute(ONE_DECISION_PER_REQUEST)
        except sqlite3.IntegrityError:  # written by a kubewrit before the index existed
            log.warning(
                "%s holds duplicate decisions for a request id; new ones are still "
                "refused in-process",
                self.path,
            )
        self._other = connect(self.path)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._writer.close()
        self._other.close()

    # -- Ledger -------------------------------------------------------------

    def head(self, chain_id: str) -> Record | None:
        with self._lock:
            row = self._other.execute(
                "SELECT body FROM records WHERE chain = ? ORDER BY seq DESC LIMIT 1", (chain_id,)
            ).fetchone()
        return Record.from_dict(orjson.loads(row[0])) if row else None

    def after(self, chain_id: str, seq: int) -> list[Record]:
        with self._lock:
            rows = self._other.execute(
                "SELECT body FROM records WHERE chain = ? AND seq > ? ORDER BY seq",
                (chain_id, seq),
            ).fetchall()
        return [Record.from_dict(orjson.loads(body)) for (body,) in rows]

    def remove(self, records: Sequence[Record]) -> None:
        raise Unsupported(
            "ledger_append_only",
            "a SQLite batch is one transaction: nothing lands past a gap, and nothing is removed",
        )

    def write(self, records: Sequence[Record]) -> None:
        rows = [
            (
                r.chain,
                r.seq,
                r.hash,
                r.time,
                r.kind,
                r.agent,
                r.tool,
                r.decision,
                r.reason,
                r.request_id,
                orjson.dumps(r.to_dict()).decode(),
            )
            for r in records
        ]
        charges = [
            (item.limit, item.scope, chain.epoch(r.time), str(item.amount), r.chain, r.seq)
            for r in records
            for item in counted(r)
        ]
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            if charges:
                connection.executemany("INSERT INTO charges VALUES (?,?,?,?,?,?)", charges)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def publish_anchor(self, anchor: Anchor) -> None:
        with self._lock:
            self._other.execute(
                "INSERT INTO anchors VALUES (?,?,?) ON CONFLICT(chain) DO UPDATE SET "
                "seq = excluded.seq, body = excluded.body WHERE excluded.seq >= anchors.seq",
                (anchor.chain, anchor.seq, orjson.dumps(anchor.to_dict()).decode()),
            )

    # -- budget.ChargeSource and HistoryReader ----------------------------------

    def charges(self, limit: str, scope: str, since: float) -> list[tuple[float, Decimal]]:
        with self._lock:
            rows = self._other.execute(
                "SELECT time, amount FROM charges WHERE limit_id = ? AND scope = ? AND time > ?",
                (limit, scope, since),
            ).fetchall()
        return [(t, Decimal(amount)) for t, amount in rows]

    async def facts(self, questions: Sequence[Recent], action: Action, now: float) -> Facts:
        counts = {}
        for q in questions:
            marks = ",".join("?" * len(q.tools))
            sql = (
                f"SELECT count(*) FROM records WHERE agent = ? AND tool IN ({marks}) "
                "AND decision = 'PERMIT' AND time > ?"
            )
            params: list[Any] = [action.agent, *q.tools, chain.timestamp(now - q.window)]
            if q.per_session:
                sql += " AND json_extract(body, '$.session') IS ?"
                params.append(action.context.get("session"))
            with self._lock:
                (counts[q],) = self._other.execute(sql, params).fetchone()
        return Facts(counts)

    # -- reading ------------------------------------------------------------

    def anchors(self) -> list[Anchor]:
        with self._lock:
            rows = self._other.execute("SELECT body FROM anchors ORDER BY chain").fetchall()
        return [Anchor.from_dict(orjson.loads(body)) for (body,) in rows]

    def chains(self) -> list[str]:
        with self._lock:
            rows = self._other.execute(
                "SELECT DISTINCT chain FROM records ORDER BY chain"
            ).fetchall()
        return [chain for (chain,) in rows]

    def iter_records(self, chain: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored record body in chain, seq order (for export and verification)."""
        return map(orjson.loads, self.iter_bodies(chain))

    def iter_bodies(self, chain: str | None = None) -> Iterator[str]:
        """Every stored record's JSON text in chain, seq order, unparsed: one read
        transaction, so a store written meanwhile is read as it was when this began.

        `verify.read_json` hands the text to other processes to check while it parses."""
        reader = connect(self.path)
        try:
            sql = "SELECT body FROM records"
            params: tuple[Any, ...] = ()
            if chain:
                sql += " WHERE chain = ?"
                params = (chain,)
            for (body,) in reader.execute(sql + " ORDER BY chain, seq", params):
                yield body
        finally:
            reader.close()

    def query(self, q: RecordQuery) -> list[Record]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("chain", q.chain),
            ("agent", q.agent),
            ("tool", q.tool),
            ("decision", q.decision),
        ):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if q.after_seq is not None:
            clauses.append("seq > ?")
            params.append(q.after_seq)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._other.execute(
                f"SELECT body FROM records{where} ORDER BY time, chain, seq LIMIT ?",
                (*params, max(1, min(q.limit, 1000))),
            ).fetchall()
        return [Record.from_dict(orjson.loads(body)) for (body,) in rows]

    # -- RequestStore -----------------------------------------------------------

    async def claim(self, key: RequestKey, action_hash: str) -> Record | None:
        """The decision already recorded for this request id, if any.

        One server owns one database (and one chain), and `requests.Requests` serializes
        a request id in process, so the durable half of a claim is this lookup; the
        unique index refuses a second decision record whatever happens.
        """
        return self.decided(key.agent, key.request_id)

    def decided(self, agent: str, request_id: str) -> Record | None:
        """The decision recorded for (agent, request_id), if any."""
        with self._lock:
            row = self._other.execute(
                "SELECT body FROM records WHERE agent = ? AND request_id = ? AND kind = 'decision' "
                "ORDER BY time LIMIT 1",
                (agent, request_id),
            ).fetchone()
        return Record.from_dict(orjson.loads(row[0])) if row else None

    async def release(self, key: RequestKey) -> None:
        """Nothing was reserved durably: an unrecorded decision leaves no trace to undo."""

    # -- ApprovalStore --------------------------------------------------------

    def create(self, approval: Approval, sealer: Sealer) -> Approval:
        approval = sealer(replace(approval, uid=approval.id))  # one row, never re-created
        with self._lock:
            self._other.execute(
                "INSERT INTO approvals VALUES (?,?,?,?,?,?)",
                (
                    approval.id,
                    approval.phase.value,
                    approval.agent,
                    approval.created_at,
                    approval.expires_at,
                    json.dumps(approval.to_dict()),
                ),
            )
        return approval

    def get(self, approval_id: str, namespace: str | None = None) -> Approval | None:
        with self._lock:
            row = self._other.execute(
                "SELECT body FROM approvals WHERE id = ?", (approval_id,)
            ).fetchone()
        return Approval.from_dict(json.loads(row[0])) if row else None

    def swap(self, expected: Phase, updated: Approval) -> bool:
        with self._lock:
            cursor = self._other.execute(
                "UPDATE approvals SET phase = ?, body = ? WHERE id = ? AND phase = ?",
                (updated.phase.value, json.dumps(updated.to_dict()), updated.id, expected.value),
            )
        return cursor.rowcount == 1

    def list(self, phase: Phase | None = None, limit: int = 100) -> list[Approval]:
        sql, params = "SELECT body FROM approvals", ()  # type: tuple[str, tuple[Any, ...]]
        if phase is not None:
            sql, params = sql + " WHERE phase = ?", (phase.value,)
        with self._lock:
            rows = self._other.execute(
                sql + " ORDER BY created_at LIMIT ?", (*params, limit)
            ).fetchall()
        return [Approval.from_dict(json.loads(body)) for (body,) in rows]


class SQLiteBudgets:
    """`slices.SharedBudgets` in the SQLite file, for server processes sharing it
    (`kubewrit serve --workers N`): each update is one write transaction, which SQLite
    serializes across processes."""

    def __init__(self, path: Path | str) -> None:
        self._connection = connect(path)
        self._connection.executescript(SCHEMA)
        self._lock = threading.Lock()

    def update(
        self,
        limit: Limit,
        scope: str,
        change: Callable[[BudgetState, float], None],
        clock: Callable[[], float],
    ) -> None:
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(
                    "SELECT state FROM budgets WHERE limit_id = ? AND scope = ?", (limit.id, scope)
                ).fetchone()
                state = BudgetState.from_json(row[0] if row else None, limit.id, scope)
                before = state.to_json()
                change(state, clock())
                if state.to_json() == before:
                    connection.execute("ROLLBACK")
                    return
                connection.execute(
                    "INSERT INTO budgets VALUES (?,?,?) ON CONFLICT(limit_id, scope) "
                    "DO UPDATE SET state = excluded.state",
                    (limit.id, scope, state.to_json()),
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def read(self, limit: Limit, scope: str) -> BudgetState | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT state FROM budgets WHERE limit_id = ? AND scope = ?", (limit.id, scope)
            ).fetchone()
        return BudgetState.from_json(row[0], limit.id, scope) if row else None

    def close(self) -> None:
        self._connection.close()
