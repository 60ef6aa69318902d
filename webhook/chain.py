"""Decision Provenance Records and the hash chain that links them.

A record's hash is SHA-256 over the RFC 8785 bytes of every field except the
hash and the signature; the signature is Ed25519 over that hash. Each record
names the hash of its predecessor, so changing, removing, inserting or
reordering any record breaks a link a verifier can point at.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubewrit.webhook import canonical
from kubewrit.webhook.keys import Signer, Verifier

GENESIS_PREV = "0" * 64
UNSIGNED_FIELDS = ("hash", "signature")


def timestamp(now: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch(stamp: str) -> float:
    """Seconds since the epoch for a record's `time` (the inverse of `timestamp`)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Draft:
    """What a writer wants recorded; the chain adds position, hash and signature."""

    kind: str  # decision | approval | denial | expiry | genesis
    decision: str = ""
    reason: str = ""
    agent: str = ""
    tool: str = ""
    action_hash: str = ""
    policy_hash: str = ""
    rule: str = ""
    risk: str = ""
    approver: str | None = None
    approval: str | None = None
    request_id: str | None = None
    message: str = ""
    namespace: str | None = None


@dataclass(frozen=True)
class Record(Draft):
    chain: str = ""
    seq: int = 0
    prev: str = GENESIS_PREV
    time: str = ""
    key_id: str = ""
    hash: str = ""
    signature: str = ""

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in UNSIGNED_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown record fields: {sorted(unknown)}")
        return cls(**data)


def record_hash(body: dict[str, Any]) -> str:
    return canonical.content_hash(body)


def seal(
    draft: Draft, chain: str, seq: int, prev: str, signer: Signer, now: float | None = None
) -> Record:
    """Give a draft its place in the chain, its hash and its signature."""
    unsigned = Record(
        **asdict(draft), chain=chain, seq=seq, prev=prev, time=timestamp(now), key_id=signer.key_id
    )
    digest = record_hash(unsigned.body())
    return replace(unsigned, hash=digest, signature=signer.sign(digest.encode()))


def signature_valid(record: Record, verifier: Verifier) -> bool:
    return verifier.verify(record.signature, record.hash.encode())


def genesis_draft(public_key_b64: str) -> Draft:
    return Draft(kind="genesis", message=f"ed25519:{public_key_b64}")


@dataclass(frozen=True)
class Anchor:
    """A published chain head, signed by the chain's writer."""

    chain: str
    seq: int
    hash: str
    time: str
    key_id: str
    signature: str = ""

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "signature"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Anchor:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def sign_anchor(head: Record | Head, signer: Signer) -> Anchor:
    unsigned = Anchor(head.chain, head.seq, head.hash, timestamp(), signer.key_id)
    return replace(unsigned, signature=signer.sign(canonical.canonical_bytes(unsigned.body())))


def anchor_valid(anchor: Anchor, verifier: Verifier) -> bool:
    return verifier.verify(anchor.signature, canonical.canonical_bytes(anchor.body()))


@dataclass
class Head:
    """The writer's view of its chain tip."""

    chain: str
    seq: int = -1
    hash: str = GENESIS_PREV

    def seal_next(self, draft: Draft, signer: Signer) -> Record:
        record = seal(draft, self.chain, self.seq + 1, self.hash, signer)
        self.seq, self.hash = record.seq, record.hash
        return record
