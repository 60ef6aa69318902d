"""Retention's cuts, next to the anchors in kubewrit's own namespace.

Retention records `<chain>.cut` = where the retained chain now begins (signed by the
operator), so a verifier can accept a chain that starts at seq k with the given prev
hash. The format, the place and the compare-and-swap write belong to
`kubewrit.webhook.kube.configmaps`; the rule here is that a cut never moves backwards.
"""

from __future__ import annotations

from kubernetes import client
from kubewrit.webhook.chain import Cut
from kubewrit.webhook.kube import configmaps

__all__ = ["Cut", "read_cut", "write_cut"]


def read_cut(core: client.CoreV1Api, home: str, namespace: str, chain: str) -> Cut | None:
    """The chain's recorded cut; None if there is none. Raises ValueError if it is malformed."""
    data = configmaps.read(core, home, configmaps.anchors_name(namespace))
    raw = data.get(configmaps.cut_key(chain))
    return configmaps.parse_cut(raw) if raw else None


def write_cut(core: client.CoreV1Api, home: str, namespace: str, chain: str, cut: Cut) -> Cut:
    """Record `cut` for `chain` (whose records live in `namespace`); a cut never moves backwards.

    Returns the cut now stored (which is `cut`, or a later one another writer stored).
    """
    key = configmaps.cut_key(chain)

    def advance(data: dict[str, str]) -> dict[str, str] | None:
        stored = data.get(key)
        if stored and configmaps.parse_cut(stored).seq >= cut.seq:
            return None
        return {**data, **configmaps.cut_entry(chain, cut)}

    stored = configmaps.update(core, home, configmaps.anchors_name(namespace), advance)
    return configmaps.parse_cut(stored[key])
