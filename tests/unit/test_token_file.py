"""Standalone tokens: a token another process adds works at once; a rotated one stops.

The server's TokenFile and `kubewrit tokens create` (another process) share the file;
the server re-reads it when it changes, checking at most every RECHECK_SECONDS for
tokens it already knows and at once for a token it does not know.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kubewrit.webhook import identity
from kubewrit.webhook.identity import Role, TokenFile


def touch_later(path: Path) -> None:
    """A new mtime even where the clock's granularity would hide a quick second write."""
    stamp = path.stat().st_mtime + 2
    os.utime(path, (stamp, stamp))


def test_a_token_created_elsewhere_works_immediately(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    server = TokenFile(path)
    first = server.add("agent-a", Role.AGENT)
    assert server.authenticate(first).name == "agent-a"
    created = TokenFile(path).add("agent-b", Role.AGENT)  # `kubewrit tokens create`
    touch_later(path)
    principal = server.authenticate(created)
    assert principal is not None and principal.name == "agent-b"


def test_a_rotated_token_is_refused_within_the_recheck_interval(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    server = TokenFile(path)
    old = server.add("agent-a", Role.AGENT)
    assert server.authenticate(old) is not None
    new = TokenFile(path).add("agent-a", Role.AGENT)  # rotate: the old token is gone
    touch_later(path)
    time.sleep(identity.RECHECK_SECONDS + 0.05)
    assert server.authenticate(old) is None
    assert server.authenticate(new).name == "agent-a"


def test_an_unknown_token_is_refused(tmp_path: Path) -> None:
    server = TokenFile(tmp_path / "tokens.yaml")
    server.add("agent-a", Role.AGENT)
    assert server.authenticate("kwag_not-a-token") is None
