"""Retention: export old ActionRecords, then delete them as a prefix of their chain.

etcd is not an archive. Records older than `max_age`, or beyond the newest
`max_count` in a namespace, are appended to a JSON Lines sink (one record spec
per line, the spec's own field names) and only then deleted, oldest first.
Only a *prefix* of each chain is ever cut, only across intact links (each seq
followed by seq+1 whose prev is its hash), and never the chain's last record,
so the remaining chain plus the recorded cut (`<chain>.cut`, signed by the operator's
key, next to the chain's anchor in kubewrit's own namespace) still verifies, and
tampering that left a gap is not papered over by a cut that would hide it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client
from kubewrit.operator import anchors
from kubewrit.operator.config import RetentionConfig
from kubewrit.webhook import keys
from kubewrit.webhook.chain import sign_cut
from kubewrit.webhook.kube import api as kube
from kubewrit.webhook.kube import configmaps

log = logging.getLogger(__name__)


@dataclass
class ChainCut:
    """What one pass does to one chain: export and delete `doomed`, then record `cut`."""

    namespace: str
    chain: str
    doomed: list[dict[str, Any]] = field(default_factory=list)
    first_retained: dict[str, Any] | None = None

    @property
    def cut_seq(self) -> int:
        return int((self.first_retained or {}).get("spec", {}).get("seq", 0))


def record_time(obj: Mapping[str, Any]) -> datetime | None:
    spec = obj.get("spec") or {}
    return kube.parse_time(spec.get("time")) or kube.parse_time(
        (obj.get("metadata") or {}).get("creationTimestamp")
    )


def expendable(
    records: list[dict[str, Any]], now: datetime, max_age: float, max_count: int
) -> set[str]:
    """Names of one namespace's records that retention may remove (age or count)."""
    names: set[str] = set()
    if max_age > 0:
        horizon = now - timedelta(seconds=max_age)
        for obj in records:
            moment = record_time(obj)
            if moment is not None and moment < horizon:
                names.add(obj["metadata"]["name"])
    if max_count > 0 and len(records) > max_count:

        def age_key(obj: dict[str, Any]) -> tuple[str, str, int]:
            moment = record_time(obj)
            spec = obj.get("spec") or {}
            return (
                moment.isoformat() if moment else "",
                str(spec.get("chain")),
                int(spec.get("seq", 0)),
            )

        oldest_first = sorted(records, key=age_key)
        names.update(obj["metadata"]["name"] for obj in oldest_first[: len(records) - max_count])
    return names


def plan_chain(
    namespace: str,
    chain: str,
    records: list[dict[str, Any]],
    doomed: set[str],
    cut: anchors.Cut | None,
) -> ChainCut:
    """The longest deletable prefix of one chain (records sorted by seq inside)."""
    ordered = sorted(records, key=lambda o: int(o["spec"]["seq"]))
    result = ChainCut(namespace, chain)
    if not ordered:
        return result
    start = cut.seq if cut else 0
    first = ordered[0]["spec"]
    if int(first["seq"]) != start or (cut and first.get("prev") != cut.prev):
        log.error(
            "retention: chain %s/%s starts at seq %s but its cut says %s: records are "
            "missing; not cutting this chain (run `kubewrit verify`)",
            namespace,
            chain,
            first["seq"],
            start,
        )
        return result
    index = 0
    while index < len(ordered) - 1:  # never the chain's last record
        here, after = ordered[index], ordered[index + 1]
        linked = int(after["spec"]["seq"]) == int(here["spec"]["seq"]) + 1 and after["spec"].get(
            "prev"
        ) == here["spec"].get("hash")
        if here["metadata"]["name"] not in doomed or not linked:
            break
        index += 1
    result.doomed = ordered[:index]
    result.first_retained = ordered[index]
    return result


def list_records(
    custom: client.CustomObjectsApi, namespaces: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """Every ActionRecord in `namespaces` (all namespaces if empty), page by page."""
    for namespace in namespaces or (None,):
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500}
            if token:
                kwargs["_continue"] = token
            if namespace is None:
                page = custom.list_cluster_custom_object(
                    kube.GROUP, kube.VERSION, kube.RECORDS, **kwargs
                )
            else:
                page = custom.list_namespaced_custom_object(
                    kube.GROUP, kube.VERSION, namespace, kube.RECORDS, **kwargs
                )
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break


def export(sink: Path, records: list[dict[str, Any]]) -> None:
    """Append one spec per line and fsync: nothing is deleted before it is durable elsewhere."""
    sink.parent.mkdir(parents=True, exist_ok=True)
    with sink.open("a", encoding="utf-8") as out:
        for obj in records:
            out.write(json.dumps(obj["spec"], sort_keys=True, separators=(",", ":")) + "\n")
        out.flush()
        os.fsync(out.fileno())


class Retention:
    """One retention pass over the cluster (or the configured namespaces)."""

    def __init__(
        self, api: client.ApiClient, config: RetentionConfig, namespaces: tuple[str, ...] = ()
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.config = config
        self.namespaces = namespaces
        self.signer = keys.load_or_create(config.signing_key)
        self._published = False

    def publish_key(self) -> None:
        """Publish the key that signs cuts next to the webhook's, where verifiers trust keys."""
        entry = configmaps.key_entry(self.signer.key_id, self.signer.verifier.b64)

        def add(data: dict[str, str]) -> dict[str, str] | None:
            return (
                None
                if data.get(self.signer.key_id) == entry[self.signer.key_id]
                else {
                    **data,
                    **entry,
                }
            )

        configmaps.update(self.core, self.config.home, kube.KEYS_CONFIGMAP, add)
        self._published = True

    def plan(self, now: datetime | None = None) -> list[ChainCut]:
        now = now or kube.now()
        by_namespace: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for obj in list_records(self.custom, self.namespaces):
            if isinstance(obj.get("spec"), dict) and "seq" in obj["spec"]:
                by_namespace[obj["metadata"]["namespace"]].append(obj)
        cuts: list[ChainCut] = []
        for namespace, records in sorted(by_namespace.items()):
            doomed = expendable(records, now, self.config.max_age, self.config.max_count)
            if not doomed:
                continue
            chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for obj in records:
                chains[str(obj["spec"].get("chain"))].append(obj)
            for chain, members in sorted(chains.items()):
                if not any(o["metadata"]["name"] in doomed for o in members):
                    continue
                cut = anchors.read_cut(self.core, self.config.home, namespace, chain)
                planned = plan_chain(namespace, chain, members, doomed, cut)
                if planned.doomed:
                    cuts.append(planned)
        return cuts

    def apply(self, planned: ChainCut, may_continue: Callable[[], bool]) -> int:
        """Export, delete oldest first, then record the cut. Returns how many were deleted."""
        sink = self.config.sink
        if not self._published:  # before any deletion: the cut it signs must be checkable
            self.publish_key()
        export(sink, planned.doomed)
        deleted = 0
        for obj in planned.doomed:
            if not may_continue():
                log.warning("retention: lost leadership; stopping after %d deletions", deleted)
                break
            meta = obj["metadata"]
            try:
                self.custom.delete_namespaced_custom_object(
                    kube.GROUP,
                    kube.VERSION,
                    meta["namespace"],
                    kube.RECORDS,
                    meta["name"],
                    body=client.V1DeleteOptions(
                        preconditions=client.V1Preconditions(uid=meta["uid"])
                    ),
                )
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
            deleted += 1
        if deleted == 0:
            return 0
        if deleted == len(planned.doomed):
            first = (planned.first_retained or {})["spec"]
        else:  # interrupted: the cut is right after the last record actually deleted
            first = planned.doomed[deleted]["spec"]
        cut = sign_cut(
            planned.chain, int(first["seq"]), str(first.get("prev", "")), str(sink), self.signer
        )
        anchors.write_cut(self.core, self.config.home, planned.namespace, planned.chain, cut)
        log.info(
            "retention: exported and deleted %d records of chain %s in %s (seq %s..%s) "
            "to %s; the chain now begins at seq %s",
            deleted,
            planned.chain,
            planned.namespace,
            planned.doomed[0]["spec"]["seq"],
            planned.doomed[deleted - 1]["spec"]["seq"],
            sink,
            cut.seq,
        )
        return deleted

    def run_once(self, may_continue: Callable[[], bool] = lambda: True) -> int:
        total = 0
        for planned in self.plan():
            if not may_continue():
                break
            total += self.apply(planned, may_continue)
        log.info("retention: pass done, %d records removed", total)
        return total
