"""AgentPolicy: refused at `kubectl apply` if invalid; otherwise Ready, with its hash in status.

Admission and status use the one validator the CLI uses
(`kubewrit.webhook.policy.compile_document`), so `kubewrit check` and
`kubectl apply` can never disagree about a policy.

A policy can still become invalid behind admission's back (it was applied
while the webhook was down, or the compiler got stricter). Then the decision
webhook keeps enforcing the last valid generation, and the status says so:
Ready=False naming the error, `servingGeneration` and `policyHash` still
describing what is enforced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import kopf
from kubernetes import client
from kubewrit.webhook.kube import api as kube
from kubewrit.webhook.kube import configmaps
from kubewrit.webhook.policy import Policy, PolicyError, compile_document
from kubewrit.webhook.policy.history import format_window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """The last valid generation of one AgentPolicy, as this replica has seen it."""

    generation: int
    policy: Policy


# (namespace, name) -> last valid generation seen by this process. Approvals read the
# approvers of the policy being enforced from here when the current spec is invalid.
SERVED: dict[tuple[str, str], Served] = {}


def source_of(namespace: str | None, name: str | None) -> str:
    return f"AgentPolicy {namespace}/{name}"


def compile_manifest(body: Mapping[str, Any]) -> Policy:
    """Compile an AgentPolicy object exactly as the CLI compiles a manifest file."""
    metadata = body.get("metadata") or {}
    manifest = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")},
        "spec": dict(body.get("spec") or {}),
    }
    return compile_document(
        manifest, source=source_of(metadata.get("namespace"), metadata.get("name"))
    )


@kopf.on.validate(
    kube.GROUP,
    kube.VERSION,
    kube.POLICIES,
    id="validate-policy",
    operations=["CREATE", "UPDATE"],
    persistent=True,
)
def validate_policy(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Refuse an invalid policy with the compiler's message: which rule, what is wrong."""
    if not memo.config.governs(body.get("metadata", {}).get("namespace")):
        return
    try:
        compile_manifest(body)
    except PolicyError as exc:
        raise kopf.AdmissionError(str(exc), code=422) from None


def ready_condition(
    status: str, reason: str, message: str, generation: int, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A Ready condition whose lastTransitionTime only moves when the status flips."""
    since = (previous or {}).get("lastTransitionTime")
    if not previous or previous.get("status") != status or not since:
        since = kube.rfc3339()
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def desired_status(body: Mapping[str, Any]) -> dict[str, Any]:
    """The status this generation of the policy should have (pure; used by the handler)."""
    metadata = body.get("metadata") or {}
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    generation = int(metadata.get("generation") or 0)
    current = dict(body.get("status") or {})
    previous_ready = next(
        (c for c in current.get("conditions") or [] if c.get("type") == "Ready"), None
    )
    try:
        policy = compile_manifest(body)
    except PolicyError as exc:
        serving: int | None
        policy_hash: str | None
        rules: int | None
        served = SERVED.get((namespace, name))
        if served is not None:  # what this process saw compile last
            serving, policy_hash, rules = (
                served.generation,
                served.policy.hash,
                len(served.policy.rules),
            )
        else:  # after a restart: what the status already says is being served
            serving = current.get("servingGeneration")
            policy_hash, rules = current.get("policyHash"), current.get("ruleCount")
        if serving is not None and policy_hash:
            message = (
                f"generation {generation} is invalid and not enforced; still serving "
                f"generation {serving} (policy hash {policy_hash}): {exc}"
            )
            reason = "InvalidServingPrevious"
        else:
            message = f"generation {generation} is invalid and nothing is served: {exc}"
            reason, serving, policy_hash, rules = "Invalid", None, None, None
        return {
            "observedGeneration": generation,
            "servingGeneration": serving,
            "policyHash": policy_hash,
            "ruleCount": rules,
            "message": message,
            "conditions": [ready_condition("False", reason, message, generation, previous_ready)],
        }
    SERVED[(namespace, name)] = Served(generation, policy)
    message = (
        f"serving generation {generation}: {len(policy.rules)} rules, mode {policy.mode.value}"
    )
    return {
        "observedGeneration": generation,
        "servingGeneration": generation,
        "policyHash": policy.hash,
        "ruleCount": len(policy.rules),
        "message": message,
        "conditions": [ready_condition("True", "Compiled", message, generation, previous_ready)],
    }


def _same(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    def strip(status: Mapping[str, Any]) -> dict[str, Any]:
        out = {
            k: v
            for k, v in status.items()
            if k != "conditions" and v is not None and k in desired  # limits: the timer's
        }
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return out

    return strip(current) == strip(desired)


@kopf.on.event(kube.GROUP, kube.VERSION, kube.POLICIES, id="policy-status")
def policy_status(
    type: str | None, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any
) -> None:
    """Every observed generation gets a status; unchanged generations cost nothing.

    An event handler (not create/update) so kopf keeps no bookkeeping annotations on
    the policy: the status is a pure function of the spec and the last valid generation.
    """
    metadata = body.get("metadata") or {}
    key = (metadata.get("namespace") or "", metadata.get("name") or "")
    if type == "DELETED":
        SERVED.pop(key, None)
        return
    desired = desired_status(body)
    if _same(body.get("status") or {}, desired):
        return
    for k, v in desired.items():
        patch.status[k] = v
    ready = desired["conditions"][0]
    level = logging.INFO if ready["status"] == "True" else logging.WARNING
    logger.log(level, "AgentPolicy %s/%s: %s", key[0], key[1], ready["message"])


def approvers_of(namespace: str, name: str, body: Mapping[str, Any] | None) -> Policy | None:
    """The policy whose approvers decide: the current spec if valid, else the one still served."""
    if body is not None:
        try:
            return compile_manifest(body)
        except PolicyError:
            pass
    served = SERVED.get((namespace, name))
    if served is None:
        return None
    status = (body or {}).get("status") or {}
    if body is not None and status.get("policyHash") not in (None, served.policy.hash):
        return None
    return served.policy


def limit_usage(
    policy: Policy, budgets: Iterable[Mapping[str, str]], now: float
) -> list[dict[str, Any]]:
    """`status.limits`: per limit, its scopes in use and the fullest one's count.

    Read from the budget ConfigMaps the decision webhook keeps (`slices.BudgetState`);
    slices leased to replicas count in full, as they do for deciding.
    """
    found = []
    for limit in policy.limits:
        used: list[Decimal] = []
        for data in budgets:
            if data.get("limit") != limit.id:
                continue
            try:
                state = configmaps.parse_budget(data, limit.id, data.get("scope", ""))
            except ValueError:
                continue
            used.append(state.used(now, limit.window))
        found.append(
            {
                "name": limit.name,
                "window": format_window(limit.window),
                "bound": str(limit.bound),
                "used": str(max(used, default=Decimal(0))),
                "scopes": sum(1 for u in used if u > 0),
                "exceeded": limit.exceeded,
            }
        )
    return found


def usage_summary(limits: list[dict[str, Any]]) -> str:
    """The printer column: `auto-refund-budget 1000/1000 per 24h, ...` (fullest scope)."""
    return ", ".join(
        f"{u['name']} {u['used']}/{u['bound']} per {u['window']}"
        + (f" ({u['scopes']} scopes)" if u["scopes"] > 1 else "")
        for u in limits
    )


@kopf.timer(
    kube.GROUP,
    kube.VERSION,
    kube.POLICIES,
    id="limit-usage",
    interval=10,
    when=lambda spec, **_: bool(spec.get("limits")),
)
def limit_status(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Each limit's current count in the policy's status, every 10 s while it has limits."""
    try:
        policy = compile_manifest(body)
    except PolicyError:
        return
    core = client.CoreV1Api(memo.api)
    listed = core.list_namespaced_config_map(
        memo.config.retention.home, label_selector=configmaps.BUDGET_LABEL
    )
    budgets = [dict(cm.data or {}) for cm in listed.items]
    limits = limit_usage(policy, budgets, time.time())
    status = body.get("status") or {}
    if status.get("limits") != limits:
        patch.status["limits"] = limits
        patch.status["limitUsage"] = usage_summary(limits)
