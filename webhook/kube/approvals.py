"""ActionApprovals: DEFERs as Kubernetes objects, decided with `kubectl annotate`.

The operator's admission webhooks stamp who decided (from the API server's
userInfo) and refuse anyone who may not. This module keeps a watch-fed cache,
turns a stamped decision into the authority's resolve (re-evaluate, record,
move the phase), and moves phases with compare-and-swap on resourceVersion.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from kubernetes import client
from kubewrit.webhook import canonical
from kubewrit.webhook.approval import Approval, Sealer, approvers_from
from kubewrit.webhook.decision import Phase
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube import watching

log = logging.getLogger(__name__)


def to_object(approval: Approval) -> dict[str, Any]:
    namespace = approval.namespace or ""
    spec: dict[str, Any] = {
        "agent": approval.agent,
        "serviceAccount": f"{kube_api.SERVICE_ACCOUNT_PREFIX}{namespace}:{approval.agent}",
        "tool": approval.tool,
        "actionHash": approval.action_hash,
        "action": canonical.canonical_bytes(approval.action).decode(),
        "rule": approval.rule,
        "risk": approval.risk,
        "reason": approval.reason,
        "message": approval.message,
        "policyHash": approval.policy_hash,
        "expiresAt": kube_api.rfc3339(approval.expires_at),
    }
    if approval.action.get("operation"):
        spec["operation"] = approval.action["operation"]
    if approval.request_id:
        spec["requestId"] = approval.request_id
    if approval.approvers is not None:
        spec["approvers"] = [a.to_dict() for a in approval.approvers]
    return {
        "apiVersion": f"{kube_api.GROUP}/{kube_api.VERSION}",
        "kind": "ActionApproval",
        "metadata": {
            "name": approval.id,
            "namespace": namespace,
            "labels": {
                kube_api.LABEL_AGENT: kube_api.label_value(approval.agent),
                kube_api.LABEL_TOOL: kube_api.label_value(approval.tool),
            },
        },
        "spec": spec,
    }


def status_of(approval: Approval) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": approval.phase.value}
    if approval.decided_by:
        status["decidedBy"] = approval.decided_by
    if approval.decided_at:
        status["decidedAt"] = kube_api.rfc3339(approval.decided_at)
    if approval.decision_reason:
        status["reason"] = approval.decision_reason
    if approval.seal:
        status["seal"] = approval.seal
        status["sealKey"] = approval.seal_key
    if approval.outcome:
        status["decision"] = approval.outcome.get("decision")
        status["outcome"] = json.dumps(approval.outcome, sort_keys=True)
    return status


def from_object(obj: dict[str, Any]) -> Approval:
    metadata, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
    return Approval(
        id=metadata["name"],
        agent=spec["agent"],
        tool=spec["tool"],
        action_hash=spec["actionHash"],
        action=json.loads(spec["action"]),
        rule=spec.get("rule", ""),
        risk=spec.get("risk", ""),
        reason=spec.get("reason", ""),
        message=spec.get("message", ""),
        policy_hash=spec.get("policyHash", ""),
        created_at=kube_api.timestamp(metadata.get("creationTimestamp")),
        expires_at=kube_api.timestamp(spec.get("expiresAt")),
        phase=Phase(status.get("phase", "Pending")),
        request_id=spec.get("requestId"),
        decided_by=status.get("decidedBy"),
        decided_at=kube_api.timestamp(status.get("decidedAt")) or None,
        decision_reason=status.get("reason"),
        outcome=json.loads(status["outcome"]) if status.get("outcome") else None,
        namespace=metadata.get("namespace"),
        approvers=approvers_from(spec.get("approvers")),
        uid=metadata.get("uid", ""),
        seal=status.get("seal", ""),
        seal_key=status.get("sealKey", ""),
    )


Resolver = Callable[[str, Principal, bool, str | None, str | None], Coroutine[Any, Any, Any]]
Key = tuple[str, str]  # (namespace, name): an approval's name is unique only in its namespace


def key_of(obj: dict[str, Any]) -> Key:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


class ActionApprovalStore:
    """approval.ApprovalStore over ActionApproval objects, with a watch-fed cache for reads."""

    def __init__(self, api: client.ApiClient, governed: tuple[str, ...] = ()) -> None:
        self.api = api
        # The namespaces whose approval decisions the operator validates and stamps (empty:
        # all). Elsewhere a `decided-by` stamp is just an annotation anyone may have written.
        self.governed = governed
        self.custom = kube_api.custom(api)
        self._cache: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self.resolver: Resolver | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._resolving: set[Key] = set()

    # -- ApprovalStore --------------------------------------------------------

    def create(self, approval: Approval, sealer: Sealer) -> Approval:
        """Create the object, then seal it with its uid in the status write that follows."""
        obj = self.custom.create_namespaced_custom_object(
            kube_api.GROUP,
            kube_api.VERSION,
            approval.namespace,
            kube_api.APPROVALS,
            to_object(approval),
            field_validation=kube_api.FIELD_VALIDATION,
        )
        approval = sealer(replace(approval, uid=obj["metadata"]["uid"]))
        obj["status"] = status_of(approval)
        obj = self.custom.replace_namespaced_custom_object_status(
            kube_api.GROUP,
            kube_api.VERSION,
            approval.namespace,
            kube_api.APPROVALS,
            approval.id,
            obj,
            field_validation=kube_api.FIELD_VALIDATION,
        )
        self._remember(obj)
        return approval

    def get(self, approval_id: str, namespace: str | None = None) -> Approval | None:
        """From the watch-fed cache; by namespace and name, or by a name unique across them.

        Within a namespace a miss is read through (the watch may not have delivered an
        approval another replica just created).
        """
        with self._lock:
            if namespace is not None:
                obj = self._cache.get((namespace, approval_id))
            else:
                named = [o for (_, name), o in self._cache.items() if name == approval_id]
                obj = named[0] if len(named) == 1 else None
        if obj is None and namespace is not None:
            obj = kube_api.read_custom(self.custom, namespace, kube_api.APPROVALS, approval_id)
            if obj is not None:
                self._remember(obj)
        return from_object(obj) if obj else None

    def swap(self, expected: Phase, updated: Approval) -> bool:
        current = kube_api.read_custom(
            self.custom, updated.namespace or "", kube_api.APPROVALS, updated.id
        )
        if current is None:
            return False
        if (current.get("status") or {}).get("phase", "Pending") != expected.value:
            self._remember(current)
            return False
        current["status"] = status_of(updated)
        try:
            stored = self.custom.replace_namespaced_custom_object_status(
                kube_api.GROUP,
                kube_api.VERSION,
                updated.namespace,
                kube_api.APPROVALS,
                updated.id,
                current,
                field_validation=kube_api.FIELD_VALIDATION,
            )
        except client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._remember(stored)
        return True

    def list(self, phase: Phase | None = None, limit: int = 100) -> list[Approval]:
        with self._lock:
            objects = list(self._cache.values())
        approvals = [from_object(obj) for obj in objects]
        if phase is not None:
            approvals = [a for a in approvals if a.phase is phase]
        return sorted(approvals, key=lambda a: a.created_at)[:limit]

    # -- watching -------------------------------------------------------------

    def _remember(self, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        with self._lock:
            known = self._cache.get(key)
            if known and int(known["metadata"]["resourceVersion"]) > int(
                obj["metadata"]["resourceVersion"]
            ):
                return
            self._cache[key] = obj

    def start(self, loop: asyncio.AbstractEventLoop, resolver: Resolver) -> None:
        self.loop, self.resolver = loop, resolver
        threading.Thread(target=self._run, name="approval-watch", daemon=True).start()
        self.synced.wait(timeout=30)

    def stop(self) -> None:
        self._stop.set()

    def _observe(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            with self._lock:
                self._cache.pop(key_of(obj), None)
            return
        self._remember(obj)
        self._maybe_resolve(obj)

    def _maybe_resolve(self, obj: dict[str, Any]) -> None:
        """A stamped decision annotation on a Pending approval: hand it to the authority."""
        notes = kube_api.annotations_of(obj)
        decision = notes.get(kube_api.ANNOTATION_DECISION)
        decided_by = notes.get(kube_api.ANNOTATION_DECIDED_BY)
        phase = (obj.get("status") or {}).get("phase", "Pending")
        key = key_of(obj)
        if phase != "Pending" or decision not in ("approve", "deny") or not decided_by:
            return
        if self.governed and key[0] not in self.governed:
            log.warning(
                "approval %s/%s: ignoring a decision in a namespace the operator does not "
                "validate (governed: %s)",
                *key,
                ", ".join(self.governed),
            )
            return
        if self.resolver is None or self.loop is None or key in self._resolving:
            return
        self._resolving.add(key)
        groups = tuple(g for g in notes.get(kube_api.ANNOTATION_DECIDED_GROUPS, "").split(",") if g)
        approver = Principal(decided_by, Role.APPROVER, groups)
        future = asyncio.run_coroutine_threadsafe(
            self.resolver(
                key[1],
                approver,
                decision == "approve",
                notes.get(kube_api.ANNOTATION_REASON),
                key[0],
            ),
            self.loop,
        )
        future.add_done_callback(lambda f: self._resolved(key, f))

    def _resolved(self, key: Key, future: Any) -> None:
        self._resolving.discard(key)
        error = future.exception()
        if error is not None:
            log.warning("approval %s/%s not resolved: %s", *key, getattr(error, "message", error))

    def _listed(self, items: watching.Items) -> None:
        with self._lock:
            self._cache = {key_of(obj): obj for obj in items}
        for obj in items:
            self._maybe_resolve(obj)
        self.synced.set()

    def _run(self) -> None:
        watching.follow(self.api, kube_api.APPROVALS, self._stop, self._listed, self._observe)
