"""ActionRecords: the provenance chain stored as Kubernetes objects, anchored in ConfigMaps.

One chain per (webhook replica, namespace), so a chain never spans namespaces
and retention can cut a clean prefix. Records are small, labelled for
selection, and their spec is immutable (CEL `self == oldSelf`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, MutableSet, Sequence
from typing import Any

import orjson
from kubernetes import client
from kubewrit.webhook import chain
from kubewrit.webhook.chain import Anchor, Draft, Head, Record, genesis_draft, parse_genesis
from kubewrit.webhook.keys import Signer, Verifier
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube import configmaps
from kubewrit.webhook.kube.creates import Creates
from kubewrit.webhook.recorder import AnchorPolicy, PartialWrite, Recorder, RecordUnavailable
from kubewrit.webhook.requests import RequestKey

log = logging.getLogger(__name__)

# Record field -> ActionRecord spec field (Kubernetes spells them in camelCase).
SPEC_FIELDS = {
    "chain": "chain",
    "seq": "seq",
    "prev": "prev",
    "kind": "kind",
    "time": "time",
    "agent": "agent",
    "tool": "tool",
    "action_hash": "actionHash",
    "policy_hash": "policyHash",
    "decision": "decision",
    "reason": "reason",
    "rule": "rule",
    "risk": "risk",
    "approver": "approver",
    "approval": "approval",
    "request_id": "requestId",
    "message": "message",
    "namespace": "namespace",
    "limits": "limits",
    "session": "session",
    "batched": "batched",
    "key_id": "keyId",
    "hash": "hash",
    "signature": "signature",
}
RECORD_FIELDS = {spec: field for field, spec in SPEC_FIELDS.items()}
CREATE_RETRIES = 3
# Every call the recorder's thread waits for ends: a hung API server means DENY, not a hang.
REQUEST_TIMEOUT_SECONDS = 10.0
# A chain's newest records are found by their `kubewrit.io/day` label, from the day of a
# record known to be in it: records after it were sealed after it, so a chain of millions
# is not read whole to find its end. The known record's day is widened by a day either
# way for a clock set back, and a record older than a year is no help (the chain is read).
DAY_SECONDS = 86_400
MAX_DAYS_LISTED = 366


def to_spec(record: Record) -> dict[str, Any]:
    return {SPEC_FIELDS[k]: v for k, v in record.to_dict().items() if v is not None}


def from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A record dict (as hashed) from an ActionRecord spec; absent optional fields are null."""
    data: dict[str, Any] = dict.fromkeys(SPEC_FIELDS)
    for key, value in spec.items():
        data[RECORD_FIELDS.get(key, key)] = value
    return data


def signed_record(
    spec: dict[str, Any],
    trusted_keys: Callable[[str], Sequence[Verifier]],
    vouched: MutableSet[str] | None = None,
) -> Record | None:
    """The record an ActionRecord holds, if a trusted kubewrit key signed exactly it.

    Whoever may create ActionRecords in a namespace can write any spec; what the webhook
    believes back from them (a replay's decision, a sequence rule's history) is only what
    this returns. `vouched`: see `chain.genuine`.
    """
    try:
        record = Record.from_dict(from_spec(spec))
    except (ValueError, TypeError):
        return None
    return record if chain.genuine(record, trusted_keys(record.key_id), vouched) else None


def object_name(record: Record) -> str:
    return name_of(record.chain, record.seq)


def name_of(chain_id: str, seq: int) -> str:
    """The object holding a chain's record `seq`: names sort as sequence numbers do."""
    return f"{chain_id}-{seq:010d}"


def time_labels(stamp: str) -> dict[str, str]:
    """The hour and the day of a record's `time`, as `kubewrit.io/hour` and `/day` values."""
    return time_labels_at(chain.epoch(stamp))


def time_labels_at(moment: float) -> dict[str, str]:
    """The `kubewrit.io/hour` (YYYYMMDDHH) and `/day` (YYYYMMDD) of a moment, in UTC: what
    records carry and what history's window names (`kube.history.window_selector`)."""
    hour = time.strftime("%Y%m%d%H", time.gmtime(moment))
    return {kube_api.LABEL_HOUR: hour, kube_api.LABEL_DAY: hour[:8]}


def labels(record: Record) -> dict[str, str]:
    values = {
        kube_api.LABEL_CHAIN: record.chain,
        kube_api.LABEL_AGENT: record.agent,
        kube_api.LABEL_DECISION: record.decision,
        kube_api.LABEL_TOOL: record.tool,
        kube_api.LABEL_KIND: record.kind,
        **time_labels(record.time),
    }
    if record.kind == "decision" and record.request_id:
        values[kube_api.LABEL_REQUEST] = RequestKey(
            record.namespace, record.agent, record.request_id
        ).digest()
    return {key: kube_api.label_value(value) for key, value in values.items() if value}


def to_object(record: Record) -> dict[str, Any]:
    return {
        "apiVersion": f"{kube_api.GROUP}/{kube_api.VERSION}",
        "kind": "ActionRecord",
        "metadata": {"name": object_name(record), "labels": labels(record)},
        "spec": to_spec(record),
    }


def days_since(stamp: str, now: float) -> list[str] | None:
    """The `kubewrit.io/day` values from the day before a record's `time` to the day after
    `now`: where every record sealed after it is labelled (a clock set back by up to a
    day included). None when `stamp` says nothing usable or is more than a year back."""
    try:
        first = chain.epoch(stamp) - DAY_SECONDS
    except ValueError:
        return None
    last = now + DAY_SECONDS
    if not 0 <= last - first <= MAX_DAYS_LISTED * DAY_SECONDS:
        return None
    moments = [first + day * DAY_SECONDS for day in range(int((last - first) // DAY_SECONDS) + 1)]
    return sorted({time_labels_at(moment)[kube_api.LABEL_DAY] for moment in [*moments, last]})


class ActionRecordLedger:
    """recorder.Ledger over ActionRecord objects in each chain's namespace.

    `connections`: the keep-alive connections to kube-apiserver each recorder thread keeps,
    and so the creates it has in flight at once.
    """

    def __init__(self, api: client.ApiClient, home_namespace: str, connections: int = 16) -> None:
        self.api = api
        self.custom = kube_api.custom(api)
        self.core = kube_api.core(api)
        self.home = home_namespace
        # Every decision waits for its record's create: they go through libcurl, a batch
        # at a time, not through the generated client (see `creates`).
        self.creates = Creates(
            api.configuration,
            api.user_agent,
            connections=connections,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )

    def _create(self, record: Record, namespace: str) -> None:
        failure = self._stored(record, namespace, self._post([record], namespace)[0])
        if failure is not None:
            raise failure

    def _post(self, records: Sequence[Record], namespace: str) -> list[Exception | None]:
        path = (
            f"/apis/{kube_api.GROUP}/{kube_api.VERSION}/namespaces/{namespace}/{kube_api.RECORDS}"
            f"?fieldValidation={kube_api.FIELD_VALIDATION}"
        )
        return self.creates.post(path, [orjson.dumps(to_object(record)) for record in records])

    def _stored(
        self, record: Record, namespace: str, failure: Exception | None
    ) -> Exception | None:
        """None if `record` is stored: created now, or already there exactly as sealed.

        A create whose answer was lost may have landed: its retry meets 409, and the
        record found under its name must be this one, hash for hash.
        """
        if not isinstance(failure, client.ApiException) or failure.status != 409:
            return failure
        try:
            existing = self._read(object_name(record), namespace)
        except Exception as exc:
            return exc
        if existing is None:  # refused as existing, and gone since: not stored
            return failure
        if existing["spec"].get("hash") != record.hash:
            return RuntimeError(f"ActionRecord {object_name(record)} exists with other content")
        return None

    def _read(self, name: str, namespace: str) -> dict[str, Any] | None:
        """One ActionRecord, or None if there is none by that name (any other error raises)."""
        try:
            found = self.custom.get_namespaced_custom_object(
                kube_api.GROUP,
                kube_api.VERSION,
                namespace,
                kube_api.RECORDS,
                name,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(found)

    def write(self, records: Sequence[Record], namespace: str | None = None) -> None:
        """Create a batch concurrently; PartialWrite names the durable prefix.

        A failed create is retried. If one still fails, the batch is acknowledged up to it
        (PartialWrite); records after it may have landed all the same, and the recorder
        closes the hole they leave before its chain goes on (`Recorder._settle`).
        """
        namespace = namespace or self.home
        posted = self._post(records, namespace)
        outcomes = [
            self._stored(record, namespace, failure)
            for record, failure in zip(records, posted, strict=True)
        ]
        for index, outcome in enumerate(outcomes):
            if outcome is not None:
                outcomes[index] = self._attempt(records[index], namespace, tries=CREATE_RETRIES)
        failed = next((i for i, outcome in enumerate(outcomes) if outcome is not None), None)
        if failed is not None:
            raise PartialWrite(failed, outcomes[failed] or RuntimeError("create failed"))

    def _attempt(self, record: Record, namespace: str, tries: int = 1) -> Exception | None:
        for attempt in range(tries):
            try:
                self._create(record, namespace)
                return None
            except Exception as exc:
                error = exc
                time.sleep(0.05 * (attempt + 1) if attempt + 1 < tries else 0)
        return error

    def remove(self, records: Sequence[Record], namespace: str | None = None) -> None:
        """Delete records that do not continue their chain; one already gone is fine.

        The webhook's ClusterRole does not grant `delete` on ActionRecords: where it is not
        granted, this raises, and the recorder stays in doubt (every decision DENY).
        """
        for record in records:
            try:
                self.custom.delete_namespaced_custom_object(
                    kube_api.GROUP,
                    kube_api.VERSION,
                    namespace or self.home,
                    kube_api.RECORDS,
                    object_name(record),
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            except client.ApiException as exc:
                if exc.status != 404:
                    raise

    def head(self, chain_id: str, namespace: str | None = None) -> Record | None:
        """The chain's record with the highest seq, read from its last anchor on."""
        namespace = namespace or self.home
        anchored = self._anchored_seq(chain_id, namespace)
        found = list(self._records_from(chain_id, anchored, namespace))
        if not found:
            return None
        return Record.from_dict(max(found, key=lambda r: r["seq"]))

    def after(self, chain_id: str, seq: int, namespace: str | None = None) -> list[Record]:
        """Objects that are no record at all are left out: `kubewrit verify` names those."""
        stored = []
        for data in self._records_from(chain_id, seq, namespace or self.home):
            try:
                record = Record.from_dict(data)
            except (ValueError, TypeError):
                log.warning("ActionRecord in chain %s holds no record: %.200s", chain_id, data)
                continue
            if record.seq > seq:
                stored.append(record)
        return sorted(stored, key=lambda r: r.seq)

    def _anchored_seq(self, chain_id: str, namespace: str) -> int | None:
        """The seq of the chain's last published anchor, if it has one."""
        name = configmaps.anchors_name(namespace)
        data = configmaps.read(self.core, self.home, name, timeout=REQUEST_TIMEOUT_SECONDS)
        anchors = configmaps.parse_anchors(data, name).anchors
        return next((anchor.seq for anchor in anchors if anchor.chain == chain_id), None)

    def _records_from(
        self, chain_id: str, seq: int | None, namespace: str
    ) -> Iterator[dict[str, Any]]:
        """The chain's records from the day of its record `seq` on (and perhaps a few
        before it); the whole chain when that record is not there to date them."""
        known = self._read(name_of(chain_id, seq), namespace) if seq is not None else None
        stamp = ((known or {}).get("spec") or {}).get("time")
        days = days_since(str(stamp), time.time()) if stamp else None
        return self.chain_records(chain_id, namespace, days)

    def chain_records(
        self, chain_id: str, namespace: str, days: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The chain's records; only those labelled with one of `days`, if given."""
        selector = f"{kube_api.LABEL_CHAIN}={kube_api.label_value(chain_id)}"
        if days:
            selector += f",{kube_api.LABEL_DAY} in ({','.join(days)})"
        token = None
        while True:
            page = self.custom.list_namespaced_custom_object(
                kube_api.GROUP,
                kube_api.VERSION,
                namespace,
                kube_api.RECORDS,
                label_selector=selector,
                limit=500,
                _continue=token,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            for item in page.get("items", []):
                if item["spec"].get("chain") == chain_id:
                    yield from_spec(item["spec"])
            token = page["metadata"].get("continue")
            if not token:
                return

    def latest_head(self, lineage: str, namespace: str) -> Head | None:
        """Where the newest chain of `lineage` in `namespace` ends now, as stored; None if none."""
        page = self.custom.list_namespaced_custom_object(
            kube_api.GROUP,
            kube_api.VERSION,
            namespace,
            kube_api.RECORDS,
            label_selector=f"{kube_api.LABEL_KIND}=genesis",
        )
        newest: tuple[str, str] | None = None
        for item in page.get("items", []):
            spec = item.get("spec") or {}
            chain, stamp = str(spec.get("chain", "")), str(spec.get("time", ""))
            mine = (
                chain == lineage or parse_genesis(str(spec.get("message", ""))).lineage == lineage
            )
            if mine and (newest is None or stamp > newest[1]):
                newest = (chain, stamp)
        if newest is None:
            return None
        head = self.head(newest[0], namespace)
        return Head(head.chain, head.seq, head.hash) if head is not None else None

    def publish_anchor(self, anchor: Anchor, namespace: str | None = None) -> None:
        """In the home namespace, where the chain's tenants cannot roll it back or remove it."""
        configmaps.update(
            self.core,
            self.home,
            configmaps.anchors_name(namespace or self.home),
            configmaps.merge(configmaps.anchor_entry(anchor)),
        )

    def publish_key(self, key_id: str, public_key_b64: str) -> None:
        configmaps.update(
            self.core,
            self.home,
            kube_api.KEYS_CONFIGMAP,
            configmaps.merge(configmaps.key_entry(key_id, public_key_b64)),
        )


class ChainLedger:
    """recorder.Ledger for one chain: every record of it lives in one namespace."""

    atomic = False  # one API object per record: a batch may land in part

    def __init__(self, ledger: ActionRecordLedger, namespace: str) -> None:
        self.ledger = ledger
        self.namespace = namespace

    def head(self, chain_id: str) -> Record | None:
        return self.ledger.head(chain_id, self.namespace)

    def after(self, chain_id: str, seq: int) -> list[Record]:
        return self.ledger.after(chain_id, seq, self.namespace)

    def write(self, records: Sequence[Record]) -> None:
        self.ledger.write(records, self.namespace)

    def remove(self, records: Sequence[Record]) -> None:
        self.ledger.remove(records, self.namespace)

    def publish_anchor(self, anchor: Anchor) -> None:
        self.ledger.publish_anchor(anchor, self.namespace)


class RecorderPool:
    """One recorder (and chain) per namespace this replica records in, started on first use.

    Opening a chain reads the API (where the lineage's last chain ended) and writes its
    genesis; namespaces open side by side, each under its own lock, so one namespace whose
    reads are slow never holds up the first decision in another.
    """

    def __init__(
        self,
        ledger: ActionRecordLedger,
        signer: Signer,
        replica: str,
        anchors: AnchorPolicy,
        public_key_b64: str,
    ) -> None:
        self.ledger = ledger
        self.signer = signer
        self.replica = replica
        self.anchors = anchors
        self.public_key_b64 = public_key_b64
        self._recorders: dict[str, Recorder] = {}
        self._opening: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()  # guards the two dicts only; never held over the API
        self._stopped = False

    def lineage(self, namespace: str) -> str:
        """This replica's chains in `namespace`, one after another across restarts."""
        return kube_api.dns_label(f"{self.replica}-{namespace}")

    def chain_id(self, namespace: str) -> str:
        """A chain never written before: a restart never reuses a sequence number."""
        started = format(time.time_ns() // 1_000_000, "x")
        return kube_api.dns_label(f"{self.lineage(namespace)}-{started}")

    def recorder_for(self, namespace: str | None) -> Recorder:
        namespace = namespace or self.ledger.home
        with self._lock:
            if self._stopped:
                raise RecordUnavailable("the recorders are stopping")
            recorder = self._recorders.get(namespace)
            if recorder is not None:
                return recorder
            opening = self._opening.setdefault(namespace, threading.Lock())
        with opening:  # one opener per namespace; the others wait for its recorder
            with self._lock:
                recorder = self._recorders.get(namespace)
            if recorder is not None:
                return recorder
            recorder = self._open(namespace)
            with self._lock:
                if self._stopped:  # stopped while this one was opening: it goes too
                    recorder.stop()
                    raise RecordUnavailable("the recorders are stopping")
                self._recorders[namespace] = recorder
                del self._opening[namespace]
            return recorder

    def _open(self, namespace: str) -> Recorder:
        """A new chain in `namespace`, its genesis naming where the lineage's last one ended."""
        lineage = self.lineage(namespace)
        previous = self.ledger.latest_head(lineage, namespace)
        recorder = Recorder(
            ChainLedger(self.ledger, namespace),
            self.signer,
            self.chain_id(namespace),
            self.anchors,
            self.public_key_b64,
            genesis_draft(self.public_key_b64, lineage, previous),
        )
        recorder.start()
        return recorder

    async def record(self, draft: Draft) -> Record:
        recorder = self._recorders.get(draft.namespace or self.ledger.home)
        try:
            if recorder is None:  # first record in this namespace: opening the chain reads the API
                recorder = await asyncio.to_thread(self.recorder_for, draft.namespace)
        except Exception as exc:
            raise RecordUnavailable(f"cannot open the chain for {draft.namespace}: {exc}") from exc
        return await recorder.record(draft)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            recorders = list(self._recorders.values())
            self._recorders.clear()
        for recorder in recorders:
            recorder.stop()
