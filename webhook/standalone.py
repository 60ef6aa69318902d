"""Wiring for `kubewrit serve`: policy files, SQLite, per-agent tokens, a chain per process."""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from kubewrit.webhook import keys, reload
from kubewrit.webhook.authority import Authority
from kubewrit.webhook.backend import Backend
from kubewrit.webhook.budget import LocalBudgets
from kubewrit.webhook.chain import Anchor, Record
from kubewrit.webhook.identity import Role, TokenFile, write_private_yaml
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy_state import PolicyState
from kubewrit.webhook.recorder import AnchorPolicy, DuplicateRequest, Ledger, Recorder
from kubewrit.webhook.server.runtime import Runtime, Tuning
from kubewrit.webhook.slices import LeasedBudgets
from kubewrit.webhook.store.sqlite import SQLiteBudgets, SQLiteStore

log = logging.getLogger(__name__)

BOOTSTRAP_APPROVER = "approver"
BOOTSTRAP_GROUP = "kubewrit-approvers"


@dataclass
class Config(Tuning):
    policies: Path = Path("examples/policies")
    data_dir: Path = Path(".kubewrit")
    chain: str | None = None
    watch: bool = True
    bootstrap_tokens: bool = True
    printed: list[str] = field(default_factory=list)
    # One of several server processes sharing the data directory (`serve --workers N`):
    # each claims its own chain and serializes its commits with the others'.
    shared: bool = False

    def to_json(self) -> str:
        """For the worker processes: every field, paths as strings."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(policies=str(self.policies), data_dir=str(self.data_dir), printed=[])
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Config:
        data = json.loads(text)
        data.update(policies=Path(data["policies"]), data_dir=Path(data["data_dir"]))
        return cls(**data)

    @property
    def database(self) -> Path:
        return self.data_dir / "kubewrit.db"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "signing-key.pem"

    @property
    def tokens_file(self) -> Path:
        return self.data_dir / "tokens.yaml"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials.yaml"


def save_credential(path: Path, name: str, role: Role, token: str) -> None:
    """The client side's copy of a token (like a kubeconfig): plaintext, mode 0600."""
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {}
    data.setdefault("credentials", {})[name] = {"role": role.value, "token": token}
    write_private_yaml(path, data)


def bootstrap_tokens(config: Config, tokens: TokenFile, state: PolicyState) -> list[str]:
    """First start: a token per agent named in the policies, and one approver."""
    created = []
    agents = sorted({a for p in state.policies for a in p.agents if not set("*?[") & set(a)})
    for agent in agents:
        token = tokens.add(agent, Role.AGENT)
        save_credential(config.credentials_file, agent, Role.AGENT, token)
        created.append(f"agent {agent}: {token}")
    token = tokens.add(BOOTSTRAP_APPROVER, Role.APPROVER, (BOOTSTRAP_GROUP,))
    save_credential(config.credentials_file, BOOTSTRAP_APPROVER, Role.APPROVER, token)
    created.append(f"approver {BOOTSTRAP_APPROVER} (group {BOOTSTRAP_GROUP}): {token}")
    return created


class SharedStoreError(ValueError):
    """Several server processes cannot serve this configuration."""


def prepare(config: Config, workers: int = 1) -> PolicyState:
    """What must exist before several workers start at once: key, schema, tokens."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    state = PolicyState()
    reload.load_into(state, config.policies, Metrics())
    keys.load_or_create(config.key_file)
    SQLiteStore(config.database).close()
    if not config.tokens_file.exists() and config.bootstrap_tokens:
        tokens = TokenFile(config.tokens_file)
        config.printed.extend(bootstrap_tokens(config, tokens, state))
    return state


class ChainSlot:
    """An exclusive claim (flock) on one of the data directory's chain names.

    A chain has one writer: each server process holds slot 0, 1, ... for its lifetime
    and writes the chain named for it, so workers never share (or fork) a chain, and a
    restarted worker continues the chain of the slot it takes. The kernel releases the
    claim when the process dies, however it dies.
    """

    def __init__(self, directory: Path, base: str, most: int = 256) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for slot in range(most):
            handle = (directory / f"slot-{slot}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self.slot, self._handle = slot, handle
            self.chain = base if slot == 0 else f"{base}-{slot}"
            return
        raise SharedStoreError(f"all {most} chain slots in {directory} are taken")

    def release(self) -> None:
        self._handle.close()


class SharedLedger:
    """The SQLite ledger for one of several writers: commits serialized across processes.

    A blocking flock hands the write over at once (SQLite's own busy handler sleeps and
    polls). Holding it, a batch is checked for request ids another worker has decided
    meanwhile; those are refused (`DuplicateRequest`) before anything is written, so two
    workers racing on one request id yield one decision and one replay.
    """

    atomic = True  # one SQLite transaction, as for a single writer

    def __init__(self, store: SQLiteStore, lock_path: Path) -> None:
        self.store = store
        self._lock = lock_path.open("a")

    def head(self, chain_id: str) -> Record | None:
        return self.store.head(chain_id)

    def after(self, chain_id: str, seq: int) -> list[Record]:
        return self.store.after(chain_id, seq)

    def remove(self, records: Sequence[Record]) -> None:
        self.store.remove(records)

    def write(self, records: Sequence[Record]) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            taken = [
                index
                for index, record in enumerate(records)
                if record.kind == "decision"
                and record.request_id
                and self.store.decided(record.agent, record.request_id) is not None
            ]
            if taken:
                raise DuplicateRequest(taken)
            self.store.write(records)
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def publish_anchor(self, anchor: Anchor) -> None:
        self.store.publish_anchor(anchor)

    def close(self) -> None:
        self._lock.close()


def build(config: Config) -> Runtime:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    state = PolicyState()
    reload.load_into(state, config.policies, metrics)
    signer = keys.load_or_create(config.key_file)
    store = SQLiteStore(config.database)
    first_start = not config.tokens_file.exists()
    tokens = TokenFile(config.tokens_file)
    if first_start and config.bootstrap_tokens:
        config.printed.extend(bootstrap_tokens(config, tokens, state))
    base = config.chain or f"standalone-{signer.key_id[:8]}"
    ledger: Ledger = store
    slot: ChainSlot | None = None
    if config.shared:
        slot = ChainSlot(config.data_dir / "chains", base)
        ledger = SharedLedger(store, config.data_dir / "chains" / "write.lock")
    recorder = Recorder(
        ledger,
        signer,
        slot.chain if slot else base,
        AnchorPolicy(config.anchor_every, config.anchor_seconds),
        signer.verifier.b64,
    )
    # One process owns its budgets outright; processes sharing the file lease slices of
    # each from a table in it (`slices`), each under its chain's name.
    budgets: LocalBudgets | LeasedBudgets = LocalBudgets(store)
    if slot is not None:
        budgets = LeasedBudgets(SQLiteBudgets(config.database), slot.chain)
    backend = Backend(
        records=recorder,
        approvals=store,
        requests=store,
        queries=store,
        budgets=budgets,
        history=store,
    )
    authority = Authority(state.current, backend, signer, config.writ_ttl, config.approval_ttl)

    async def watch_policies() -> None:
        await reload.watch(state, config.policies, metrics)

    runtime = Runtime(authority, tokens, state, metrics, config.max_body)
    runtime.start.append(recorder.start)
    runtime.stop.extend([recorder.stop, store.close])
    if slot is not None:
        assert isinstance(ledger, SharedLedger) and isinstance(budgets, LeasedBudgets)
        runtime.stop.insert(0, budgets.settle_all)  # unused slices go back first
        runtime.stop.extend([ledger.close, slot.release])
        runtime.background.append(budgets.return_idle)
    runtime.background.append(authority.approvals.sweep)
    if config.watch:
        runtime.background.append(watch_policies)
    return runtime
