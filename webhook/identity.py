"""Who is asking: the agent is who authenticated, never what the body claims.

Standalone mode uses per-principal bearer tokens. The server's token file holds
only SHA-256 hashes; the plaintext is shown once when a token is created.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import yaml


class Role(StrEnum):
    AGENT = "agent"
    APPROVER = "approver"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    groups: tuple[str, ...] = field(default=())
    namespace: str | None = None
    # False when the identity could not be confirmed just now (the API server is down) and
    # comes from its last confirmation: enough to attribute a DENY, never to permit.
    verified: bool = True


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None if it is not one; may wait on the network."""
        ...

    def recall(self, token: str) -> Principal | None:
        """The token's principal if it is known without waiting, else None (then ask
        `authenticate`). The HTTP layer calls this on its event loop: a thread hop per
        request is a measurable share of a decision's CPU."""
        ...


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token(role: Role) -> str:
    return f"kw{role.value[:2]}_" + secrets.token_urlsafe(32)


RECHECK_SECONDS = 0.1  # how long a token removed from the file may still be honoured


class TokenFile:
    """Per-principal tokens from a YAML file: {agents: {name: {token_sha256}}, approvers: {...}}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, Principal] = {}
        self._mtime: float | None = None
        self._checked = time.monotonic()
        self.reload()

    def _stamp(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def reload(self) -> None:
        self._mtime = self._stamp()
        data = self._read()
        by_hash: dict[str, Principal] = {}
        for section, role in (("agents", Role.AGENT), ("approvers", Role.APPROVER)):
            for name, entry in (data.get(section) or {}).items():
                digest = (entry or {}).get("token_sha256")
                if not isinstance(digest, str) or not digest.startswith("sha256:"):
                    raise ValueError(
                        f"{self.path}: {section}.{name} needs token_sha256: sha256:<hex>"
                    )
                by_hash[digest] = Principal(
                    str(name), role, tuple((entry or {}).get("groups") or ())
                )
        self._by_hash = by_hash

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        data = yaml.safe_load(self.path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: expected a mapping with agents and approvers")
        return data

    def authenticate(self, token: str) -> Principal | None:
        """The token's principal. A new token works at once; a removed one within RECHECK.

        The file's mtime is checked at most every RECHECK seconds for tokens already
        known, and always for a token not known: a stat on every decision costs far more
        than its few microseconds (the event loop gives up the GIL to the recorder thread
        and waits to get it back).
        """
        now = time.monotonic()
        if now - self._checked >= RECHECK_SECONDS:
            self._refresh(now)
        digest = token_hash(token)
        principal = self._by_hash.get(digest)
        if principal is None and self._checked != now:
            self._refresh(now)
            principal = self._by_hash.get(digest)
        return principal

    def recall(self, token: str) -> Principal | None:
        """A dict lookup and at most a stat(): never waits."""
        return self.authenticate(token)

    def _refresh(self, now: float) -> None:
        self._checked = now
        if self._stamp() != self._mtime:
            self.reload()

    def add(self, name: str, role: Role, groups: tuple[str, ...] = ()) -> str:
        """Create (or rotate) a token; returns the plaintext, which is not stored."""
        data = self._read()
        section = "agents" if role is Role.AGENT else "approvers"
        other = "approvers" if role is Role.AGENT else "agents"
        if name in (data.get(other) or {}):
            raise ValueError(f"{name!r} is already an {other[:-1]}: one identity cannot be both")
        token = new_token(role)
        entry: dict[str, Any] = {"token_sha256": token_hash(token)}
        if groups:
            entry["groups"] = list(groups)
        data.setdefault(section, {})[name] = entry
        write_private_yaml(self.path, data)
        self.reload()
        return token


def write_private_yaml(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` atomically with a file only its owner can read (tokens, credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=True)
    temporary.replace(path)
