"""kubewrit's ConfigMaps: where they live, their wire formats, and the one way to change them.

All of them live in kubewrit's own namespace (the webhook's `--namespace`, default
kubewrit-system), never in a tenant's: a namespace admin can write ConfigMaps in their
namespace, and what they can write is never trusted for keys, anchors or cuts. The chart
grants ConfigMap writes in that namespace only.

`kubewrit-anchors-<namespace>`, one per namespace that holds chains:
  `<chain>`      the chain's signed head, an Anchor as JSON (the decision webhook);
  `<chain>.cut`  where retention cut the chain, a signed Cut as JSON (the operator).
`kubewrit-keys`: `<key id>` = a public key, base64url (each webhook replica's and each
  operator replica's; `kubewrit verify` trusts these, or the keys the auditor supplies).
`kubewrit-budget-<digest>`, one per (limit, scope) in use: `state` is the shared budget
  (`BudgetState` as JSON: what was spent when, and the slices leased to replicas), and
  `limit`, `scope`, `used`, `bound`, `window` say the same for people (label
  `kubewrit.io/budget`, so `kubectl get cm -l kubewrit.io/budget` lists them).

Every writer changes them through `update`: compare-and-swap on resourceVersion (read,
change, replace; re-read on 409 Conflict), so none clobbers another's keys, and a write
that cannot be made raises instead of being dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from kubernetes import client
from kubewrit.webhook import keys
from kubewrit.webhook.chain import Anchor, Cut
from kubewrit.webhook.slices import BudgetState

log = logging.getLogger(__name__)

CUT_SUFFIX = ".cut"
CAS_ATTEMPTS = 20
HOME_NAMESPACE = "kubewrit-system"
ANCHORS_PREFIX = "kubewrit-anchors-"


def anchors_name(namespace: str) -> str:
    """The ConfigMap (in the home namespace) holding the anchors and cuts of `namespace`'s chains."""
    return f"{ANCHORS_PREFIX}{namespace}"


class ConfigMapConflict(RuntimeError):
    """Compare-and-swap kept losing to other writers: nothing was written."""


def cut_key(chain: str) -> str:
    return f"{chain}{CUT_SUFFIX}"


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), sort_keys=True)


def anchor_entry(anchor: Anchor) -> dict[str, str]:
    return {anchor.chain: _json(anchor.to_dict())}


def cut_entry(chain: str, cut: Cut) -> dict[str, str]:
    return {cut_key(chain): _json(cut.to_dict())}


def key_entry(key_id: str, public_key_b64: str) -> dict[str, str]:
    return {key_id: public_key_b64}


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None


def parse_cut(raw: str) -> Cut:
    """One `<chain>.cut` value. Raises ValueError if it is not a cut."""
    return Cut.from_dict(_loads(raw))


def parse_anchor(raw: str) -> Anchor:
    """One `<chain>` value. Raises ValueError if it is not an anchor."""
    return Anchor.from_dict(_loads(raw))


@dataclass
class AnchorData:
    """What a `kubewrit-anchors` ConfigMap says, and what in it could not be read."""

    anchors: list[Anchor] = field(default_factory=list)
    cuts: dict[str, Cut] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def parse_anchors(data: Mapping[str, str] | None, where: str) -> AnchorData:
    """Every anchor and cut in a `kubewrit-anchors` data map; never raises."""
    parsed = AnchorData()
    for key, value in sorted((data or {}).items()):
        try:
            if key.endswith(CUT_SUFFIX):
                parsed.cuts[key[: -len(CUT_SUFFIX)]] = parse_cut(value)
            else:
                anchor = parse_anchor(value)
                if anchor.chain != key:
                    raise ValueError(f"holds the anchor of chain {anchor.chain!r}")
                parsed.anchors.append(anchor)
        except ValueError as exc:
            parsed.problems.append(f"{where} key {key!r}: {exc}")
    return parsed


def parse_keys(data: Mapping[str, str] | None, where: str) -> tuple[list[keys.Verifier], list[str]]:
    """The public keys in a `kubewrit-keys` data map, and the entries that are not keys."""
    verifiers, problems = [], []
    for key_id, value in sorted((data or {}).items()):
        try:
            verifiers.append(keys.load_public(value))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            problems.append(f"{where} key {key_id!r}: not a public key: {exc}")
    return verifiers, problems


def update(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    change: Callable[[dict[str, str]], dict[str, str] | None],
    labels: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Apply `change` to a ConfigMap's data by compare-and-swap; return the data stored.

    `change` gets a copy of the current data (empty if the ConfigMap does not exist yet)
    and returns the new data, or None when there is nothing to write. It may run several
    times (once per conflict). Raises ConfigMapConflict if every attempt lost a race,
    and the API's error for anything but a conflict.
    """
    for _ in range(CAS_ATTEMPTS):
        try:
            current: Any = core.read_namespaced_config_map(name, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            current = None
        data = dict((current.data if current is not None else None) or {})
        wanted = change(dict(data))
        if wanted is None:
            return data
        try:
            if current is None:
                core.create_namespaced_config_map(
                    namespace,
                    client.V1ConfigMap(
                        metadata=client.V1ObjectMeta(
                            name=name,
                            namespace=namespace,
                            labels={"app.kubernetes.io/part-of": "kubewrit", **(labels or {})},
                        ),
                        data=wanted,
                    ),
                )
            else:
                # metadata.resourceVersion is the one we read: a stale write is refused.
                current.data = wanted
                core.replace_namespaced_config_map(name, namespace, current)
            return wanted
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            log.debug("ConfigMap %s/%s changed underneath us; retrying", namespace, name)
    raise ConfigMapConflict(
        f"could not update ConfigMap {namespace}/{name}: {CAS_ATTEMPTS} attempts lost a race"
    )


BUDGET_PREFIX = "kubewrit-budget-"
BUDGET_LABEL = "kubewrit.io/budget"


def budget_name(limit: str, scope: str) -> str:
    digest = hashlib.sha256(json.dumps([limit, scope]).encode()).hexdigest()[:32]
    return f"{BUDGET_PREFIX}{digest}"


def budget_data(state: BudgetState, now: float, window: int, bound: Decimal) -> dict[str, str]:
    """A budget ConfigMap's data: the state, and the same for people."""
    return {
        "state": state.to_json(),
        "limit": state.limit,
        "scope": state.scope,
        "used": str(state.used(now, window)),
        "bound": str(bound),
        "window": str(window),
    }


def parse_budget(data: Mapping[str, str], limit: str, scope: str) -> BudgetState:
    """A budget ConfigMap's state; empty when it does not exist yet. Raises ValueError for
    one that is not a budget, or another limit's (a digest collision or a forgery)."""
    return BudgetState.from_json(data.get("state"), limit, scope)


def merge(entries: Mapping[str, str]) -> Callable[[dict[str, str]], dict[str, str]]:
    """An `update` change that sets `entries`, keeping every other key."""
    return lambda data: {**data, **entries}


def read(
    core: client.CoreV1Api, namespace: str, name: str, timeout: float | None = None
) -> dict[str, str]:
    """A ConfigMap's data; empty if it does not exist."""
    try:
        found = core.read_namespaced_config_map(name, namespace, _request_timeout=timeout)
        return dict(found.data or {})
    except client.ApiException as exc:
        if exc.status == 404:
            return {}
        raise
