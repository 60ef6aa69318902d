"""Wiring for `kubewrit serve`: policy files, SQLite, per-agent tokens, one chain."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubewrit.webhook import keys, reload
from kubewrit.webhook.authority import Authority
from kubewrit.webhook.backend import Backend
from kubewrit.webhook.budget import LocalBudgets
from kubewrit.webhook.identity import Role, TokenFile, write_private_yaml
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy_state import PolicyState
from kubewrit.webhook.recorder import AnchorPolicy, Recorder
from kubewrit.webhook.server.runtime import Runtime, Tuning
from kubewrit.webhook.store.sqlite import SQLiteStore

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
    chain_id = config.chain or f"standalone-{signer.key_id[:8]}"
    recorder = Recorder(
        store,
        signer,
        chain_id,
        AnchorPolicy(config.anchor_every, config.anchor_seconds),
        signer.verifier.b64,
    )
    backend = Backend(
        records=recorder,
        approvals=store,
        requests=store,
        queries=store,
        budgets=LocalBudgets(store),
        history=store,
    )
    authority = Authority(state.current, backend, signer, config.writ_ttl, config.approval_ttl)

    async def watch_policies() -> None:
        await reload.watch(state, config.policies, metrics)

    runtime = Runtime(authority, tokens, state, metrics, config.max_body)
    runtime.start.append(recorder.start)
    runtime.stop.extend([recorder.stop, store.close])
    runtime.background.append(authority.approvals.sweep)
    if config.watch:
        runtime.background.append(watch_policies)
    return runtime
