"""The console on Kubernetes: `kubewrit console` acting with the approver's own kubeconfig.

Like `kubectl proxy`, it runs on the approver's machine and grants nothing they do not
already have: every read is their RBAC, and approving is the same merge patch as
`kubectl annotate actionapproval NAME kubewrit.io/decision=approve`, so the API server
authenticates them, the operator's webhooks stamp or refuse them, and a refusal shows
the API server's own message. A random access code, printed in the approver's
terminal, keeps other local users from driving it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from kubernetes import client
from kubewrit.webhook import policy
from kubewrit.webhook import verify as verification
from kubewrit.webhook.approval import Approval
from kubewrit.webhook.chain import Record
from kubewrit.webhook.console.backend import (
    ActionRefused,
    ChainStatus,
    PolicyView,
    RecordFilter,
    SignInRefused,
    Viewer,
)
from kubewrit.webhook.console.routes import mount
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube import audit as kube_audit
from kubewrit.webhook.kube.approvals import from_object
from kubewrit.webhook.kube.policies import compile_object
from kubewrit.webhook.kube.records import from_spec

log = logging.getLogger(__name__)


def api_message(exc: client.ApiException) -> str:
    """What the API server said (an admission webhook's refusal, RBAC's 'forbidden')."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


class KubeBackend:
    mode = "kubernetes"
    secret_label = "Access code"
    poll_seconds = 1.0

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace: str | None = namespace
        self.api = kube_api.load(kubeconfig)
        self.custom = kube_api.custom(self.api)
        self.access_code = secrets.token_urlsafe(18)
        self.user, self.groups = self.whoami()

    def whoami(self) -> tuple[str, tuple[str, ...]]:
        """Who the API server says the kubeconfig is (SelfSubjectReview), for the page header."""
        try:
            review = client.AuthenticationV1Api(self.api).create_self_subject_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            )
            info = review.status.user_info
            return str(info.username), tuple(info.groups or ())
        except Exception as exc:  # older API servers: the page still works, unnamed
            log.warning("could not ask the API server who this kubeconfig is: %s", exc)
            return "kubeconfig user", ()

    # -- sign-in ------------------------------------------------------------------

    async def sign_in(self, secret: str) -> Viewer:
        if not secrets.compare_digest(secret.strip().encode(), self.access_code.encode()):
            raise SignInRefused("that is not the access code `kubewrit console` printed")
        return Viewer(self.user, self.groups, self.access_code)

    async def still_valid(self, viewer: Viewer) -> bool:
        return secrets.compare_digest(viewer.secret.encode(), self.access_code.encode())

    # -- reading ------------------------------------------------------------------

    def _list(self, plural: str, selector: str | None = None) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(
            kube_api.GROUP,
            kube_api.VERSION,
            self.namespace,
            plural,
            label_selector=selector or None,
        )
        return list(listing.get("items", []))

    async def _call(self, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args)
        except client.ApiException as exc:
            raise ActionRefused(api_message(exc), "api_error") from None

    async def approvals(self) -> list[Approval]:
        items = await self._call(self._list, kube_api.APPROVALS)
        found = []
        for obj in items:
            try:
                found.append(from_object(obj))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping unreadable ActionApproval: %s", exc)
        return found

    async def approval(self, approval_id: str) -> Approval | None:
        def get() -> dict[str, Any] | None:
            assert self.namespace is not None
            return kube_api.read_custom(
                self.custom, self.namespace, kube_api.APPROVALS, approval_id
            )

        obj = await self._call(get)
        return from_object(obj) if obj else None

    async def records(self, query: RecordFilter) -> list[Record]:
        labels = {
            kube_api.LABEL_AGENT: query.agent,
            kube_api.LABEL_TOOL: query.tool,
            kube_api.LABEL_DECISION: query.decision,
        }
        selector = ",".join(f"{k}={kube_api.label_value(v)}" for k, v in labels.items() if v)
        items = await self._call(self._list, kube_api.RECORDS, selector)
        found = sorted(
            (Record.from_dict(from_spec(item["spec"])) for item in items),
            key=lambda r: (r.time, r.chain, r.seq),
        )
        return [r for r in found if query.admits(r)][-query.limit :]

    async def record(self, chain: str, seq: int) -> Record | None:
        selector = f"{kube_api.LABEL_CHAIN}={kube_api.label_value(chain)}"
        items = await self._call(self._list, kube_api.RECORDS, selector)
        for item in items:
            record = Record.from_dict(from_spec(item["spec"]))
            if record.chain == chain and record.seq == seq:
                return record
        return None

    async def chain_status(self) -> ChainStatus:
        """`kubewrit verify --kubeconfig -n NAMESPACE`, with the approver's own rights."""

        def run() -> verification.Report:
            assert self.namespace is not None
            found = kube_audit.collect(self.kubeconfig, self.namespace)
            return verification.verify(
                found.records, found.anchors, found.trusted, found.cuts, problems=found.problems
            )

        try:
            return ChainStatus(await asyncio.to_thread(run))
        except client.ApiException as exc:
            return ChainStatus(
                None, f"your kubeconfig may not read the anchors: {api_message(exc)}"
            )
        except Exception as exc:
            return ChainStatus(None, str(exc))

    async def policies(self) -> PolicyView:
        items = await self._call(self._list, kube_api.POLICIES)
        compiled, errors = [], []
        for obj in items:
            try:
                compiled.append(compile_object(obj))
            except policy.PolicyError as exc:
                errors.append(str(exc))
            status = obj.get("status") or {}
            ready = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None
            )
            if ready and ready.get("status") == "False":
                errors.append(f"{obj['metadata']['name']}: {ready.get('message')}")
        return PolicyView(sorted(compiled, key=lambda p: p.name), errors)

    # -- acting -------------------------------------------------------------------

    async def decide(
        self, viewer: Viewer, approval_id: str, approve: bool, reason: str | None
    ) -> Approval:
        """`kubectl annotate actionapproval NAME kubewrit.io/decision=approve|deny` as the user."""
        annotations = {kube_api.ANNOTATION_DECISION: "approve" if approve else "deny"}
        if reason:
            annotations[kube_api.ANNOTATION_REASON] = reason

        def patch() -> dict[str, Any]:
            return dict(
                self.custom.patch_namespaced_custom_object(
                    kube_api.GROUP,
                    kube_api.VERSION,
                    self.namespace,
                    kube_api.APPROVALS,
                    approval_id,
                    {"metadata": {"annotations": annotations}},
                    _content_type="application/merge-patch+json",
                )
            )

        return from_object(await self._call(patch))


def create_app(backend: KubeBackend) -> FastAPI:
    app = FastAPI(title="kubewrit console", docs_url=None, redoc_url=None, openapi_url=None)
    mount(app, backend)
    return app
