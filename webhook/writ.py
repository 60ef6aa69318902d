"""Writs: "no writ, no action".

A PERMIT carries a short-lived EdDSA JWT binding the action hash, the agent and
the decision record. An executor verifies it offline, against the exact action
it is about to run, before running it. A standard JWT means executors in any
language can verify with the library they already have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from kubewrit.webhook import canonical
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.chain import Record
from kubewrit.webhook.keys import Signer, Verifier

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
    return jwt.encode(
        claims,
        signer.private_key,
        algorithm="EdDSA",
        headers={"typ": WRIT_TYPE, "kid": signer.key_id},
    )


class ReplayCache:
    """Remembers writs already used until they expire: a writ authorizes one execution."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def claim(self, jti: str, expires_at: int, now: float) -> bool:
        with self._lock:
            for key in [k for k, exp in self._seen.items() if exp < now]:
                del self._seen[key]
            if jti in self._seen:
                return False
            self._seen[jti] = expires_at
            return True


def verify(
    token: str,
    keys: Verifier | Iterable[Verifier],
    action: Action | str,
    agent: str | None = None,
    now: float | None = None,
    replay: ReplayCache | None = None,
) -> WritClaims:
    """Check a writ against the action about to run. Raises WritRejected."""
    verifiers = [keys] if isinstance(keys, Verifier) else list(keys)
    expected_hash = action if isinstance(action, str) else canonical.action_hash(action)
    moment = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise WritRejected("malformed", f"writ is not a JWT: {exc}") from None
    if header.get("typ") != WRIT_TYPE or header.get("alg") != "EdDSA":
        raise WritRejected("malformed", "not a kubewrit writ (typ/alg)")
    candidates = [v for v in verifiers if v.key_id == header.get("kid")] or verifiers
    claims = None
    for verifier in candidates:
        try:
            claims = jwt.decode(
                token,
                verifier.public_key,
                algorithms=["EdDSA"],
                issuer=ISSUER,
                options={
                    "require": ["exp", "iat", "sub", "act", "rec", "jti"],
                    "verify_exp": False,
                },
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise WritRejected("malformed", f"writ rejected: {exc}") from None
    if claims is None:
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
