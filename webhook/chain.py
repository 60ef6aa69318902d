"""Decision Provenance Records and the hash chain that links them.

A record's hash is SHA-256 over the RFC 8785 bytes of every field except the
hash and the signature; the signature is Ed25519 over that hash. Each record
names the hash of its predecessor, so changing, removing, inserting or
reordering any record breaks a link a verifier can point at.

Because of those links, one signature vouches for its record and every record
before it. A writer whose batches become durable all or nothing (SQLite) signs
the last record of each batch, and every record an approval's writ is issued
from; the others say so in their hashed content (`batched: true`), carry an empty
signature, and are covered by the next signed record of their chain. A chain
therefore always ends in a signed record (or at a head that a signed anchor or
export trailer names), so nothing durable is ever unsigned, and a verifier finds
the same changes as if each record were signed.
A writer whose batch may land in part (ActionRecords) signs every record.
"""

from __future__ import annotations

import time
import types
import typing
from collections.abc import Iterable, Mapping, MutableSet
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubewrit.webhook import canonical
from kubewrit.webhook.keys import Signer, Verifier

GENESIS_PREV = "0" * 64
UNSIGNED_FIELDS = ("hash", "signature")
# Fields added after records were first written: absent when unset, so a record
# that does not use them has exactly the bytes (and hash) it always had.
EXTENSION_FIELDS = ("limits", "session", "batched")

T = TypeVar("T")
MAX_SAFE_INTEGER = 2**53 - 1


def _safe_int(value: Any) -> bool:
    """A JSON integer that survives RFC 8785 (IEEE 754 doubles)."""
    return type(value) is int and abs(value) <= MAX_SAFE_INTEGER


def _kinds(hint: Any) -> tuple[type, ...] | None:
    """The classes an isinstance check needs for `hint`, or None if it needs `_safe_int`."""
    arms = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if int in arms:
        return None
    # list[...]: the entries are checked by whoever reads them
    return tuple(typing.get_origin(arm) or arm for arm in arms)


@dataclass(frozen=True)
class _Shape:
    """A dataclass's fields, resolved once (records are parsed by the million)."""

    hints: dict[str, Any]
    names: list[str]
    known: frozenset[str]
    required: frozenset[str]
    plain: list[tuple[str, tuple[type, ...]]]  # fields an isinstance check settles
    plain_names: tuple[str, ...]  # `plain` as two columns, for `_wrong_field`'s fast path
    plain_kinds: tuple[tuple[type, ...], ...]
    integers: list[tuple[str, bool]]  # (field, None allowed) checked by `_safe_int`
    defaults: dict[str, Any]  # what a field left out (an extension field) holds


_SHAPES: dict[type, _Shape] = {}


def _shape(cls: type) -> _Shape:
    found = _SHAPES.get(cls)
    if found is None:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        hints = typing.get_type_hints(cls)
        plain, integers = [], []
        for name in names:
            kinds = _kinds(hints[name])
            if kinds is None:
                nullable = type(None) in typing.get_args(hints[name])
                integers.append((name, nullable))
            else:
                plain.append((name, kinds))
        required = frozenset(names) - frozenset(EXTENSION_FIELDS)
        defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}  # type: ignore[arg-type]
        found = _SHAPES[cls] = _Shape(
            hints,
            names,
            frozenset(names),
            required,
            plain,
            tuple(name for name, _ in plain),
            tuple(kinds for _, kinds in plain),
            integers,
            defaults,
        )
    return found


def _wrong_field(shape: _Shape, data: Mapping[str, Any], keys: Any) -> str | None:
    """The first field whose value is not of its declared type (hot in verify).

    Every isinstance check at once, in C, first: a field left out is checked as None,
    which can only fail a field that is fine, and then the loop finds the one that isn't.
    """
    if not all(map(isinstance, map(data.get, shape.plain_names), shape.plain_kinds)):
        for name, kinds in shape.plain:
            if name in keys and not isinstance(data[name], kinds):
                return name
    for name, nullable in shape.integers:
        if name in keys:
            value = data[name]
            if not _safe_int(value) and not (nullable and value is None):
                return name
    return None


def parse_fields(cls: type[T], data: Any, what: str) -> T:
    """`cls` (a dataclass) from a mapping holding every field, each of its declared type.

    Raises ValueError naming the first field that is missing, unknown or of another
    type: what was read from a file or the API never reaches the code as a wrong type.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a JSON object, not {type(data).__name__}")
    shape = _shape(cls)
    keys = data.keys()
    if not keys <= shape.known:
        raise ValueError(f"unknown {what} fields: {sorted(str(k) for k in keys - shape.known)}")
    if not shape.required <= keys:
        missing = [name for name in shape.names if name in shape.required and name not in keys]
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    wrong = _wrong_field(shape, data, keys)
    if wrong is not None:
        raise ValueError(
            f"{what} field {wrong!r} must be {_type_name(shape.hints[wrong])}, "
            f"not {type(data[wrong]).__name__} {data[wrong]!r:.40}"
        )
    # Every field is checked: set them at once. (A frozen dataclass's __init__ sets each
    # through object.__setattr__, two thirds of a record's parse when verifying millions.)
    parsed = object.__new__(cls)
    parsed.__dict__.update(shape.defaults)
    parsed.__dict__.update(data)
    return parsed


def _type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(hint))
    names = {str: "a string", int: "a safe integer", type(None): "null"}
    return names.get(hint, str(hint))


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
    # What this decision drew from (or found exceeded in) each limit: budget.LimitEntry dicts.
    limits: list[dict[str, Any]] | None = None
    session: str | None = None  # the agent's `context.session`, for per-session history


@dataclass(frozen=True)
class Record(Draft):
    chain: str = ""
    seq: int = 0
    prev: str = GENESIS_PREV
    time: str = ""
    key_id: str = ""
    hash: str = ""
    signature: str = ""
    # True: signed with its batch (the next signed record's signature covers it), so its
    # own signature is empty. Hashed, so a signature removed later is still found missing.
    batched: bool | None = None

    def body(self) -> dict[str, Any]:
        """What the hash covers: every field but the hash and signature, unset extensions left out."""
        # A copy and a few deletions: a quarter of a comprehension's cost (verify hashes
        # every record; the order of the keys is the fields', as before).
        body = self.__dict__.copy()
        for name in UNSIGNED_FIELDS:
            body.pop(name, None)
        for name in EXTENSION_FIELDS:
            if body.get(name, 0) is None:
                del body[name]
        return body

    def to_dict(self) -> dict[str, Any]:
        """Every field (a flat record: no deep copy, unlike dataclasses.asdict)."""
        data = {name: getattr(self, name) for name in _shape(type(self)).names}
        for name in EXTENSION_FIELDS:
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        """Raises ValueError unless `data` has every field, each of its type."""
        return parse_fields(cls, data, "record")


def record_hash(body: dict[str, Any]) -> str:
    return canonical.content_hash(body)


def seal(
    draft: Draft,
    chain: str,
    seq: int,
    prev: str,
    signer: Signer,
    now: float | None = None,
    signed: bool = True,
) -> Record:
    """Give a draft its place in the chain, its hash and (if `signed`) its signature."""
    unsigned = Record(
        **{name: getattr(draft, name) for name in _shape(Draft).names},
        chain=chain,
        seq=seq,
        prev=prev,
        time=timestamp(now),
        key_id=signer.key_id,
        batched=None if signed else True,
    )
    digest = record_hash(unsigned.body())
    return replace(unsigned, hash=digest, signature=signer.sign(digest.encode()) if signed else "")


def must_sign(draft: Draft) -> bool:
    """Records signed even inside a batch: an approval's writ is issued from its record alone."""
    return draft.kind != "decision"


def signature_valid(record: Record, verifier: Verifier) -> bool:
    """The record's own signature verifies (an unsigned record has none to verify)."""
    return bool(record.signature) and verifier.verify(record.signature, record.hash.encode())


def _hash_matches(record: Record) -> bool:
    try:
        return record_hash(record.body()) == record.hash
    except ValueError:
        return False


def genuine(
    record: Record, verifiers: Iterable[Verifier], vouched: MutableSet[str] | None = None
) -> bool:
    """Its content matches its hash and one of `verifiers` signed it: a record read back
    from a store others can write (ActionRecords) is believed only then.

    `vouched`: hashes already found signed, kept by a caller that reads the same records
    again and again. Content hashing to one of them was signed, whatever its copy's
    signature field says; a new one is added.
    """
    if not _hash_matches(record):
        return False
    if vouched is not None and record.hash in vouched:
        return True
    if not any(signature_valid(record, v) for v in verifiers):
        return False
    if vouched is not None:
        vouched.add(record.hash)
    return True


def genesis_draft(public_key_b64: str, lineage: str = "", follows: Head | None = None) -> Draft:
    """A chain's first record: its key, and (Kubernetes) which writer's chain it continues.

    A restarted writer never resumes its old chain (it might reuse sequence numbers it had
    already acknowledged, if records after the last anchor were deleted meanwhile); it
    starts a new one whose genesis states, signed, where the old chain ended as observed.
    """
    message = f"ed25519:{public_key_b64}"
    if lineage:
        message += f" lineage:{lineage}"
    if follows is not None:
        message += f" follows:{follows.chain}@{follows.seq}:{follows.hash}"
    return Draft(kind="genesis", message=message)


@dataclass(frozen=True)
class Genesis:
    lineage: str = ""
    follows: tuple[str, int, str] | None = None  # (chain, seq, hash) observed at the start


def parse_genesis(message: str) -> Genesis:
    """What a genesis record's message says (the inverse of `genesis_draft`); never raises."""
    lineage, follows = "", None
    for word in message.split():
        if word.startswith("lineage:"):
            lineage = word[len("lineage:") :]
        elif word.startswith("follows:"):
            chain, _, rest = word[len("follows:") :].rpartition("@")
            seq, _, digest = rest.partition(":")
            if chain and seq.isdigit() and digest:
                follows = (chain, int(seq), digest)
    return Genesis(lineage, follows)


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
    def from_dict(cls, data: Mapping[str, Any]) -> Anchor:
        """Raises ValueError unless `data` has every field, each of its type."""
        return parse_fields(cls, data, "anchor")


@dataclass(frozen=True)
class Cut:
    """Where retention cut a chain: its first retained record's seq and that record's prev.

    A verifier accepts a chain that begins there; what was before went to `exported_to`.
    Whoever could write an unsigned cut could delete a chain's first records and declare
    that it begins after them, so a cut is signed (by the operator's key, published with
    the webhook's keys) and a verifier honours only a cut a trusted key signed.
    """

    seq: int
    prev: str
    exported_to: str = ""
    time: str = ""
    chain: str = ""
    key_id: str = ""
    signature: str = ""

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "signature"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cut:
        """Raises ValueError unless `data` is a cut (older, unsigned cuts lack the last fields)."""
        defaults = {"exported_to": "", "time": "", "chain": "", "key_id": "", "signature": ""}
        if isinstance(data, Mapping):
            data = {**defaults, **data}
        return parse_fields(cls, data, "cut")


def sign_body(body: dict[str, Any], signer: Signer) -> str:
    """Ed25519 over the RFC 8785 bytes of a signed statement's body (anchors, trailers)."""
    return signer.sign(canonical.canonical_bytes(body))


def body_signed(body: dict[str, Any], signature: str, verifier: Verifier) -> bool:
    try:
        message = canonical.canonical_bytes(body)
    except canonical.CanonicalError:
        return False  # what cannot be canonicalized was never signed
    return verifier.verify(signature, message)


def sign_anchor(head: Record | Head, signer: Signer) -> Anchor:
    unsigned = Anchor(head.chain, head.seq, head.hash, timestamp(), signer.key_id)
    return replace(unsigned, signature=sign_body(unsigned.body(), signer))


def anchor_valid(anchor: Anchor, verifier: Verifier) -> bool:
    return body_signed(anchor.body(), anchor.signature, verifier)


def sign_cut(chain: str, seq: int, prev: str, exported_to: str, signer: Signer) -> Cut:
    unsigned = Cut(seq, prev, exported_to, timestamp(), chain, signer.key_id)
    return replace(unsigned, signature=sign_body(unsigned.body(), signer))


def cut_valid(chain: str, cut: Cut, verifier: Verifier) -> bool:
    """Signed by `verifier`, and for this chain (a cut is never moved to another chain)."""
    return cut.chain == chain and body_signed(cut.body(), cut.signature, verifier)


@dataclass
class Head:
    """The writer's view of its chain tip."""

    chain: str
    seq: int = -1
    hash: str = GENESIS_PREV

    def seal_next(
        self, draft: Draft, signer: Signer, now: float | None = None, signed: bool = True
    ) -> Record:
        record = seal(draft, self.chain, self.seq + 1, self.hash, signer, now, signed)
        self.seq, self.hash = record.seq, record.hash
        return record


def continuation(
    known: Head, stored: Iterable[Record], verifier: Verifier
) -> tuple[Head, list[Record]]:
    """Where a chain goes on after `known`, its last acknowledged record, as stored now.

    A write whose answer was lost may have landed: the stored records that follow `known`
    one by one, each linking to the one before, continue the chain up to the last of them
    this writer signed (which vouches for those before it). Everything else stored past
    `known`, past a gap or linking elsewhere or signed by no one, was acknowledged to no
    one: the second element, for the writer to remove before the chain may go on.
    """
    head = Head(known.chain, known.seq, known.hash)
    run: list[Record] = []
    rest: list[Record] = []
    tip = head
    for record in sorted(stored, key=lambda r: r.seq):
        follows = record.seq == tip.seq + 1 and record.prev == tip.hash
        if rest or not follows or not _hash_matches(record):
            rest.append(record)
            continue
        run.append(record)
        tip = Head(known.chain, record.seq, record.hash)
    signed = max((i for i, r in enumerate(run) if signature_valid(r, verifier)), default=-1)
    if signed >= 0:
        head = Head(known.chain, run[signed].seq, run[signed].hash)
    return head, run[signed + 1 :] + rest
