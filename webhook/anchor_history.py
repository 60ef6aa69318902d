"""What an auditor saw before: anchors must never go backwards between two verifications.

An anchor is signed, so it cannot be forged; but an older signed anchor can be put back
(or the anchor removed) together with deleting the records after it, and the chain would
still look whole. Nothing in the cluster can prove otherwise to someone who trusts only
the cluster. So `kubewrit verify --state FILE` keeps, outside the cluster, the highest
signed head it has verified for each chain, and on the next run reports a chain whose
anchor is now lower, or gone, as `rolled_back`. (Anchors live in kubewrit's own
namespace, which tenants cannot write; this catches whoever can.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from kubewrit.webhook.chain import Anchor, parse_fields
from kubewrit.webhook.verify import Problem, Report


class HistoryError(ValueError):
    """The state file cannot be read: verification cannot compare with the past."""


@dataclass(frozen=True)
class Seen:
    seq: int
    hash: str
    namespace: str = ""  # where the chain's records live ("" outside Kubernetes)


def load(path: Path) -> dict[str, Seen]:
    """The heads seen before; empty for a file that does not exist yet (the first run)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise HistoryError(f"{path}: {exc}") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return {str(chain): parse_fields(Seen, entry, "seen head") for chain, entry in data.items()}
    except (ValueError, RecursionError) as exc:
        raise HistoryError(f"{path}: not a kubewrit verify state file: {exc}") from None


def rollbacks(
    seen: Mapping[str, Seen], anchors: Iterable[Anchor], scope: str | None = None
) -> list[Problem]:
    """A chain seen anchored at seq n whose newest anchor is now below n, or missing.

    `scope`: only chains of this namespace were collected (others are not judged).
    """
    highest: dict[str, Anchor] = {}
    for anchor in anchors:
        if anchor.chain not in highest or anchor.seq > highest[anchor.chain].seq:
            highest[anchor.chain] = anchor
    found = []
    for chain, before in sorted(seen.items()):
        if scope is not None and before.namespace != scope:
            continue
        now = highest.get(chain)
        if now is None:
            found.append(
                Problem(
                    chain,
                    before.seq,
                    "rolled_back",
                    f"its anchor is gone; it was anchored at seq {before.seq} before",
                )
            )
        elif now.seq < before.seq:
            found.append(
                Problem(
                    chain,
                    now.seq,
                    "rolled_back",
                    f"its anchor went back to seq {now.seq}; it was anchored at seq "
                    f"{before.seq} before: records after seq {now.seq} may have been deleted",
                )
            )
        elif now.seq == before.seq and now.hash != before.hash:
            found.append(
                Problem(chain, now.seq, "modified", "its anchor names another record than before")
            )
    return found


def advance(
    path: Path,
    seen: Mapping[str, Seen],
    report: Report,
    anchors: Iterable[Anchor],
    namespace_of: Mapping[str, str],
) -> None:
    """Remember the newest anchor of every chain that verified; never lower what was seen."""
    merged = dict(seen)
    for anchor in anchors:
        entry = report.chains.get(anchor.chain)
        if entry is None or entry.problem is not None:
            continue
        before = merged.get(anchor.chain)
        if before is None or anchor.seq > before.seq:
            merged[anchor.chain] = Seen(anchor.seq, anchor.hash, namespace_of.get(anchor.chain, ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(
        json.dumps({k: asdict(v) for k, v in sorted(merged.items())}, indent=1), encoding="utf-8"
    )
    os.replace(temporary, path)
