"""Console sessions: an HTTP-only cookie naming a server-side session, and its CSRF token.

The cookie carries only a random id (never the approver's token); the session keeps
the viewer and a CSRF token that every state-changing form must send back. Sign-in
itself is protected the same way with a short-lived pre-session (double-submit), so a
foreign page can neither act as a signed-in approver nor sign a browser in as someone.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from kubewrit.webhook.console.backend import Viewer

SESSION_COOKIE = "kubewrit_console"
LOGIN_COOKIE = "kubewrit_console_login"
SESSION_SECONDS = 12 * 3600
LOGIN_SECONDS = 15 * 60


@dataclass
class Session:
    id: str
    viewer: Viewer
    csrf: str
    expires_at: float


def token_matches(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and secrets.compare_digest(expected, given)


class Sessions:
    """In memory: a restart signs everyone out, which is the safe direction."""

    def __init__(self, lifetime: float = SESSION_SECONDS) -> None:
        self.lifetime = lifetime
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, viewer: Viewer) -> Session:
        session = Session(
            secrets.token_urlsafe(32),
            viewer,
            secrets.token_urlsafe(32),
            time.time() + self.lifetime,
        )
        with self._lock:
            now = time.time()
            self._by_id = {k: s for k, s in self._by_id.items() if s.expires_at > now}
            self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is not None and session.expires_at <= time.time():
                del self._by_id[session_id]
                return None
        return session

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._by_id.pop(session_id or "", None)
