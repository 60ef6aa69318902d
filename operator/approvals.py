"""ActionApproval: a human decides with an annotation; the API server says who that human was.

`kubectl annotate actionapproval NAME kubewrit.io/decision=approve` is the whole
approver UI. The identity cannot come from the annotation itself (anyone can
type a name), so the mutating webhook stamps the user the API server
authenticated for that very request (`userInfo`), and the validating webhook
refuses everything that would make the stamp lie or the decision unsafe: the
agent deciding its own action, a non-approver, a second decision, a late
decision, and any hand-made change to the stamp.

Only the main resource is intercepted, never `/status`: the decision webhook
moves `status.phase` (Pending -> Approved/Denied/Expired/Consumed) itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import kopf
from kubernetes import client
from kubewrit.operator import policies
from kubewrit.webhook.approval import approvers_from
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.kube import api as kube

log = logging.getLogger(__name__)

DECISIONS = ("approve", "deny")
# The stamp and the validation run in the same request, milliseconds apart; a
# decided-at further from "now" than this was not written by the mutating webhook.
STAMP_SKEW = timedelta(seconds=60)
SA_PREFIX = "system:serviceaccount:"

# Set at startup: a client for reading the selecting AgentPolicy during admission.
API: dict[str, client.ApiClient] = {}


def _changed(old: Mapping[str, str], new: Mapping[str, str], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if old.get(key) != new.get(key)]


def newly_decided(old: Mapping[str, str], new: Mapping[str, str]) -> bool:
    return kube.ANNOTATION_DECISION not in old and kube.ANNOTATION_DECISION in new


def stamp_for(userinfo: Mapping[str, Any]) -> dict[str, str]:
    """The three stamp annotations for the user the API server authenticated."""
    return {
        kube.ANNOTATION_DECIDED_BY: str(userinfo.get("username") or ""),
        kube.ANNOTATION_DECIDED_GROUPS: ",".join(userinfo.get("groups") or []),
        kube.ANNOTATION_DECIDED_AT: kube.rfc3339(),
    }


@kopf.on.mutate(
    kube.GROUP,
    kube.VERSION,
    kube.APPROVALS,
    id="stamp-approver",
    operations=["UPDATE"],
    persistent=True,
)
def stamp_approver(
    *,
    body: kopf.Body,
    userinfo: Mapping[str, Any],
    patch: kopf.Patch,
    memo: kopf.Memo,
    old: kopf.Body | None = None,
    **_: Any,
) -> None:
    """When a decision is newly annotated, stamp who made it, from the API server's userInfo."""
    if not memo.config.governs(body.get("metadata", {}).get("namespace")):
        return
    before, after = kube.annotations_of(old), kube.annotations_of(body)
    if not newly_decided(before, after):
        return
    touched = _changed(before, after, kube.STAMP_ANNOTATIONS)
    if touched:
        raise kopf.AdmissionError(
            f"{', '.join(touched)} cannot be set by hand: kubewrit stamps the approver from the "
            "identity the API server authenticated. Set only kubewrit.io/decision "
            "(and optionally kubewrit.io/reason).",
            code=403,
        )
    for key, value in stamp_for(userinfo).items():
        patch.metadata.annotations[key] = value


def is_agent(userinfo: Mapping[str, Any], spec: Mapping[str, Any], namespace: str) -> bool:
    """Whether the requester is the agent whose action this is, under any of its names."""
    username = str(userinfo.get("username") or "")
    agent = str(spec.get("agent") or "")
    identities = {str(spec.get("serviceAccount") or ""), f"{SA_PREFIX}{namespace}:{agent}"}
    if agent.startswith(SA_PREFIX):
        identities.add(agent)
    identities.discard("")
    identities.discard(f"{SA_PREFIX}{namespace}:")
    return username in identities


def selecting_policy(namespace: str, rule: str) -> tuple[str, Any]:
    """(policy name, compiled policy or None) for `spec.rule` = "<policy>/<rule-id>"."""
    name = rule.split("/", 1)[0] if rule else ""
    if not name:
        return "", None
    body: dict[str, Any] | None = None
    api = API.get("client")
    if api is not None:
        try:
            body = client.CustomObjectsApi(api).get_namespaced_custom_object(
                kube.GROUP, kube.VERSION, namespace, kube.POLICIES, name
            )
        except client.ApiException as exc:
            if kube.status_of(exc) != 404:
                raise
            return name, None
    return name, policies.approvers_of(namespace, name, body)


def refusal(
    old: Mapping[str, Any] | None,
    body: Mapping[str, Any],
    userinfo: Mapping[str, Any],
    operation: str | None,
) -> str | None:
    """Why this change to an ActionApproval must be refused, or None (pure but for the policy)."""
    before, after = kube.annotations_of(old), kube.annotations_of(body)
    metadata = body.get("metadata") or {}
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    what = f"ActionApproval {namespace}/{name}"
    guarded = kube.DECISION_ANNOTATIONS + kube.STAMP_ANNOTATIONS
    if operation == "CREATE":
        preset = [key for key in guarded if key in after]
        if preset:
            return f"{what}: a new approval cannot carry {', '.join(preset)}; decide it afterwards"
        return None

    decided_before = any(key in before for key in guarded)
    if decided_before:
        touched = _changed(before, after, guarded)
        if not touched:
            return None
        by = before.get(kube.ANNOTATION_DECIDED_BY, "someone")
        at = before.get(kube.ANNOTATION_DECIDED_AT, "an earlier time")
        if kube.ANNOTATION_DECISION in touched or kube.ANNOTATION_REASON in touched:
            return (
                f"{what} was already decided ({before.get(kube.ANNOTATION_DECISION)!s}) by "
                f"{by} at {at}; an approval is decided once and cannot be changed"
            )
        return (
            f"{what}: {', '.join(touched)} record who decided and cannot be edited "
            f"(decided by {by} at {at})"
        )

    if not newly_decided(before, after):
        touched = _changed(before, after, (*kube.STAMP_ANNOTATIONS, kube.ANNOTATION_REASON))
        if touched:
            return (
                f"{what}: {', '.join(touched)} can only come with a decision; set "
                "kubewrit.io/decision=approve|deny (the approver is stamped by kubewrit)"
            )
        return None

    decision = after.get(kube.ANNOTATION_DECISION, "")
    if decision not in DECISIONS:
        return f"{what}: kubewrit.io/decision must be approve or deny, not {decision!r}"
    username = str(userinfo.get("username") or "")
    spec = body.get("spec") or {}
    if is_agent(userinfo, spec, namespace):
        return (
            f"{what}: {username} is the agent that requested this action and may never "
            "decide its own approval; a human approver must decide"
        )
    phase = ((old or {}).get("status") or {}).get("phase")
    if phase not in (None, "", "Pending"):
        return f"{what} is {phase}; only a Pending approval can be decided"
    expires = kube.parse_time(spec.get("expiresAt"))
    if expires is None or kube.now() >= expires:
        return f"{what} expired at {spec.get('expiresAt')}; it can no longer be decided"
    stamp = {key: after.get(key) for key in kube.STAMP_ANNOTATIONS}
    stamped_at = kube.parse_time(stamp[kube.ANNOTATION_DECIDED_AT])
    expected = stamp_for(userinfo)
    if (
        stamp[kube.ANNOTATION_DECIDED_BY] != expected[kube.ANNOTATION_DECIDED_BY]
        or stamp[kube.ANNOTATION_DECIDED_GROUPS] != expected[kube.ANNOTATION_DECIDED_GROUPS]
        or stamped_at is None
        or abs(kube.now() - stamped_at) > STAMP_SKEW
    ):
        return (
            f"{what}: the approver stamp ({', '.join(kube.STAMP_ANNOTATIONS)}) does not match "
            f"the requesting user {username}; it is written by kubewrit only"
        )
    policy_name, policy = selecting_policy(namespace, str(spec.get("rule") or ""))
    if policy is None:
        return (
            f"{what}: no valid AgentPolicy {namespace}/{policy_name or '?'} selects this "
            f"approval (rule {spec.get('rule')!r}), so nobody may decide it"
        )
    groups = list(userinfo.get("groups") or [])
    if not policy.approvers.admits(username, groups):
        return (
            f"{what}: {username} is not an approver of AgentPolicy {namespace}/{policy_name} "
            f"(approvers: users {list(policy.approvers.users)}, "
            f"groups {list(policy.approvers.groups)})"
        )
    approver = Principal(username, Role.APPROVER, tuple(groups))
    for bound in approvers_from(spec.get("approvers")) or ():
        if not bound.admits(approver):
            return (
                f"{what}: {username} is not an approver of AgentPolicy {namespace}/"
                f"{bound.policy}, which also held this action (approvers: users "
                f"{list(bound.users)}, groups {list(bound.groups)})"
            )
    return None


@kopf.on.validate(
    kube.GROUP,
    kube.VERSION,
    kube.APPROVALS,
    id="validate-decision",
    operations=["CREATE", "UPDATE"],
    persistent=True,
)
def validate_decision(
    *,
    body: kopf.Body,
    userinfo: Mapping[str, Any],
    memo: kopf.Memo,
    old: kopf.Body | None = None,
    operation: str | None = None,
    **_: Any,
) -> None:
    """Refuse unsafe decisions with a message the kubectl user can act on."""
    if not memo.config.governs(body.get("metadata", {}).get("namespace")):
        return
    why = refusal(old, body, userinfo, operation)
    if why:
        log.info("refused: %s (user %s)", why, userinfo.get("username"))
        raise kopf.AdmissionError(why, code=403)
