"""Writs: "no writ, no action".

A PERMIT carries a short-lived EdDSA JWT (RFC 7519, compact JWS) binding the
action hash, the agent and the decision record. An executor verifies it offline,
against the exact action it is about to run, before running it. A standard JWT
means executors in any language can verify with the library they already have;
kubewrit signs and checks it by hand because this runs on every decision.
"""

from __future__ import annotations

import functools
import heapq
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from kubewrit.webhook import canonical, chain
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.chain import Record
from kubewrit.webhook.keys import Signer, Verifier, b64url_decode, b64url_encode

WRIT_TYPE = "kubewrit-writ+jwt"
ISSUER = "kubewrit"
DEFAULT_TTL_SECONDS = 60


class WritRejected(Exception):
    """The writ does not authorize this action. `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WritClaims:
    agent: str
    action_hash: str
    record_hash: str
    chain: str
    seq: int
    issued_at: int
    expires_at: int

    @property
    def jti(self) -> str:
        return self.record_hash


def issue(
    signer: Signer, record: Record, ttl: int = DEFAULT_TTL_SECONDS, now: float | None = None
) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "sub": record.agent,
        "act": record.action_hash,
        "rec": record.hash,
        "chn": record.chain,
        "seq": record.seq,
        "iat": issued,
        "exp": issued + ttl,
        "jti": record.hash,
    }
    signing_input = f"{_header(signer.key_id)}.{b64url_encode(_json(claims))}"
    return f"{signing_input}.{signer.sign(signing_input.encode())}"


class Issuer:
    """The one place a server issues writs.

    A writ is a pure function of its record and its issue time (Ed25519 signatures are
    deterministic), so one record never yields two different writs: a direct PERMIT's
    writ is issued at the record's own time, and a replay reproduces the same bytes, the
    same `jti` and the same expiry, which an executor's replay cache already knows; once
    it has expired, nothing can mint another.
    """

    def __init__(self, signer: Signer, ttl: int = DEFAULT_TTL_SECONDS) -> None:
        self.signer = signer
        self.ttl = ttl

    def issue(self, record: Record, issued_at: float) -> str:
        return issue(self.signer, record, self.ttl, issued_at)

    def for_decision(self, record: Record, now: float | None = None) -> str | None:
        """The writ of a PERMIT decision record, or None once its lifetime has passed."""
        issued_at = int(chain.epoch(record.time))
        if (time.time() if now is None else now) >= issued_at + self.ttl:
            return None
        return self.issue(record, issued_at)


@functools.lru_cache(maxsize=64)
def _header(key_id: str) -> str:
    """The encoded JOSE header: the same for every writ a key signs."""
    return b64url_encode(_json({"alg": "EdDSA", "kid": key_id, "typ": WRIT_TYPE}))


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class ReplayCache:
    """Remembers writs already used until they expire: a writ authorizes one execution.

    Expiry is kept in a heap, so each claim forgets the expired in O(log n) instead of
    scanning everything remembered.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._expiry: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def claim(self, jti: str, expires_at: int, now: float) -> bool:
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                self._seen.discard(heapq.heappop(self._expiry)[1])
            if jti in self._seen:
                return False
            self._seen.add(jti)
            heapq.heappush(self._expiry, (expires_at, jti))
            return True


REQUIRED_CLAIMS = ("exp", "iat", "sub", "act", "rec", "jti")


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """The JWS compact parts, parsed; the signature is checked by the caller.

    Verified by hand rather than through PyJWT: this runs before every governed
    tool call, and one Ed25519 check is most of what it needs to cost.
    """
    try:
        head, body, signature = token.split(".")
        header, claims = orjson.loads(b64url_decode(head)), orjson.loads(b64url_decode(body))
        raw_signature = b64url_decode(signature)
    except (ValueError, AttributeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise WritRejected("malformed", f"writ is not a JWT: {exc}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise WritRejected("malformed", "writ header and claims must be JSON objects")
    return header, claims, f"{head}.{body}".encode(), raw_signature


def claims_of(token: str) -> dict[str, Any]:
    """A writ's claims, UNVERIFIED: for routing (whose writ is it?), never for trust."""
    return _split(token)[1]


def verify(
    token: str,
    keys: Verifier | Iterable[Verifier] | None,
    action: Action | str,
    agent: str | None = None,
    now: float | None = None,
    replay: ReplayCache | None = None,
) -> WritClaims:
    """Check a writ against the action about to run. Raises WritRejected.

    `keys=None` checks everything but the signature: it catches arguments changed after
    the decision and reused writs, not a forged writ. Only for clients that talk to a
    kubewrit they already trust and have no public key configured.
    """
    expected_hash = action if isinstance(action, str) else canonical.action_hash(action)
    moment = time.time() if now is None else now
    header, claims, signed, signature = _split(token)
    if header.get("typ") != WRIT_TYPE or header.get("alg") != "EdDSA":
        raise WritRejected("malformed", "not a kubewrit writ (typ/alg)")
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing or claims.get("iss") != ISSUER:
        raise WritRejected("malformed", f"writ lacks claims {missing} or has the wrong issuer")
    if not all(isinstance(claims[name], int) for name in ("exp", "iat")):
        raise WritRejected("malformed", "writ times must be integers")
    if keys is not None:
        verifiers = [keys] if isinstance(keys, Verifier) else list(keys)
        candidates = [v for v in verifiers if v.key_id == header.get("kid")] or verifiers
        if not any(v.verify_raw(signature, signed) for v in candidates):
            raise WritRejected("bad_signature", "writ signature does not match any trusted key")
    if moment >= claims["exp"]:
        raise WritRejected("expired", f"writ expired {int(moment - claims['exp'])}s ago")
    if claims["act"] != expected_hash:
        raise WritRejected(
            "action_mismatch", "writ was issued for a different action (arguments changed?)"
        )
    if agent is not None and claims["sub"] != agent:
        raise WritRejected("agent_mismatch", f"writ was issued to {claims['sub']!r}, not {agent!r}")
    if replay is not None and not replay.claim(claims["jti"], claims["exp"], moment):
        raise WritRejected("replayed", "writ was already used")
    return WritClaims(
        claims["sub"],
        claims["act"],
        claims["rec"],
        claims.get("chn", ""),
        int(claims.get("seq", -1)),
        claims["iat"],
        claims["exp"],
    )
