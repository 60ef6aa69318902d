"""What an agent was recently permitted to do: the facts sequence conditions read.

A rule may depend on history (`match.after`, or `history.count(...)` in CEL), so the
facts it needs are known when the policy is compiled: each is a `Recent` question
(these tools, within this window, for this agent or this session). The server asks
its backend those questions before evaluating and hands the answers in as `Facts`;
evaluation itself stays pure, and `kubewrit test` answers them from a scripted past.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubewrit.webhook import canonical
from kubewrit.webhook.policy.spelling import unknown_keys

WINDOW = re.compile(r"^([1-9][0-9]*)(s|m|h|d)$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_SECONDS = 31 * 86400
AFTER_KEYS = ("tool", "within", "per")


def parse_window(value: Any, what: str = "window") -> int:
    """`90s`, `10m`, `1h`, `7d` (or a whole number of seconds) -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        seconds = value
    elif isinstance(value, str) and (found := WINDOW.fullmatch(value.strip())):
        seconds = int(found.group(1)) * UNIT_SECONDS[found.group(2)]
    else:
        raise ValueError(f"{what} {value!r} must be a duration like 90s, 10m, 1h or 7d")
    if seconds > MAX_WINDOW_SECONDS:
        raise ValueError(f"{what} {value!r} is longer than 31d")
    return seconds


def format_window(seconds: int) -> str:
    """The shortest spelling, in hours up to two days (`24h` reads better than `1d`)."""
    units = ("h", "m") if seconds <= 2 * 86400 else ("d", "h", "m")
    for unit in units:
        if seconds % UNIT_SECONDS[unit] == 0:
            return f"{seconds // UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Recent:
    """How many actions, of these tools, were permitted to this agent (or this
    session) in the last `window` seconds, the one being decided excluded."""

    tools: tuple[str, ...]
    window: int
    per_session: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "tools": sorted(self.tools),
            "within": format_window(self.window),
            "per": "session" if self.per_session else "agent",
        }


class Facts:
    """The answers to every `Recent` question the selecting policies ask."""

    def __init__(self, counts: Mapping[Recent, int] | None = None) -> None:
        self._counts = dict(counts or {})

    def count(self, question: Recent) -> int:
        """Unanswered means the caller did not ask first: refuse rather than read 0."""
        try:
            return self._counts[question]
        except KeyError:
            raise LookupError(f"history for {question.describe()} was not looked up") from None


def tally(
    questions: Iterable[Recent], action: Any, now: float, records: Iterable[Mapping[str, Any]]
) -> Facts:
    """Answer the questions from records (record fields: agent, namespace, decision, tool,
    time, session), for backends that read records whole rather than querying them."""
    from kubewrit.webhook.chain import epoch

    session = action.context.get("session")
    mine = [
        r
        for r in records
        if r.get("agent") == action.agent
        and r.get("namespace") == action.namespace
        and r.get("decision") == "PERMIT"
    ]
    return Facts(
        {
            q: sum(
                1
                for r in mine
                if r.get("tool") in q.tools
                and epoch(str(r.get("time"))) > now - q.window
                and (not q.per_session or r.get("session") == session)
            )
            for q in questions
        }
    )


NO_HISTORY = Facts()


def no_history_for(questions: Any) -> Facts:
    """Every question answered 0: a preview that knows no past (the console's playground)."""
    return Facts(dict.fromkeys(questions, 0))


def compile_after(spec: Any) -> Recent:
    """`after: {tool: [read_inbox, export_customers], within: 10m, per: session}`."""
    if not isinstance(spec, Mapping):
        raise ValueError("match.after must be a mapping with tool and within")
    problem = unknown_keys(spec, AFTER_KEYS)
    if problem:
        raise ValueError(f"match.after: {problem}")
    tools = spec.get("tool")
    if isinstance(tools, str):
        tools = [tools]
    if not isinstance(tools, list) or not tools or not all(isinstance(t, str) and t for t in tools):
        raise ValueError("match.after.tool must be a tool name or a list of them")
    per = spec.get("per", "agent")
    if per not in ("agent", "session"):
        raise ValueError(f"match.after.per {per!r} must be agent or session")
    for tool in tools:
        canonical.normalize_tool(tool)
    return Recent(
        tuple(sorted(set(tools))),
        parse_window(spec.get("within"), "match.after.within"),
        per == "session",
    )
