"""Request ids across webhook replicas: a reservation Lease per (namespace, agent, request_id).

Creating an object is atomic in the API server, so the replica whose create
succeeds is the only one that decides; every other replica that receives the
same request id finds the reservation and waits for the decision record, which
carries a label with the same digest. A reservation whose holder died before
recording anything (no record after `stale_after`) is taken over with a
compare-and-swap on its resourceVersion; a failed swap means another replica
took it, and the loop looks again. Reservations live in kubewrit's own
namespace (tenants cannot pre-create or delete them) and are collected after
`ttl`: within that window a request id is never decided twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubewrit.webhook.chain import Record
from kubewrit.webhook.errors import Conflict, Unavailable
from kubewrit.webhook.keys import Verifier
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube.records import signed_record
from kubewrit.webhook.requests import RequestKey

log = logging.getLogger(__name__)

COMPONENT = "request-reservation"
ANNOTATION_ACTION_HASH = "kubewrit.io/action-hash"
DEFAULT_TTL_SECONDS = 24 * 3600.0


def micro_time(moment: float | None = None) -> str:
    when = datetime.fromtimestamp(time.time() if moment is None else moment, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseRequestStore:
    """requests.RequestStore over coordination.k8s.io Leases and labelled ActionRecords."""

    def __init__(
        self,
        api: client.ApiClient,
        home_namespace: str,
        holder: str,
        trusted_keys: Callable[[str], Sequence[Verifier]],
        stale_after: float = 30.0,
        wait: float = 10.0,
        ttl: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.trusted_keys = trusted_keys
        self.custom = kube_api.custom(api)
        self.home = home_namespace
        self.holder = holder
        self.stale_after = stale_after
        self.wait = wait
        self.ttl = ttl

    def _lease(self, key: RequestKey, action_hash: str) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": f"kubewrit-request-{key.digest()}",
                "namespace": self.home,
                "labels": {
                    "app.kubernetes.io/part-of": "kubewrit",
                    "app.kubernetes.io/component": COMPONENT,
                    kube_api.LABEL_AGENT: kube_api.label_value(key.agent),
                },
                "annotations": {ANNOTATION_ACTION_HASH: action_hash},
            },
            "spec": {"holderIdentity": self.holder, "renewTime": micro_time()},
        }

    async def claim(self, key: RequestKey, action_hash: str) -> Record | None:
        try:
            return await asyncio.to_thread(self._claim, key, action_hash)
        except (Conflict, Unavailable):
            raise
        except Exception as exc:
            raise Unavailable(
                "request_store_unavailable", f"cannot reserve the request id: {exc}"
            ) from exc

    def _claim(self, key: RequestKey, action_hash: str) -> Record | None:
        body = self._lease(key, action_hash)
        name = body["metadata"]["name"]
        try:
            self.leases.create_namespaced_lease(self.home, body)
            return None
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        deadline = time.monotonic() + self.wait
        pause = 0.02
        while True:
            lease = self.leases.read_namespaced_lease(name, self.home)
            reserved_for = (lease.metadata.annotations or {}).get(ANNOTATION_ACTION_HASH)
            if reserved_for != action_hash:
                raise Conflict(
                    "request_id_reused", "request_id was already used for a different action"
                )
            record = self.decided(key)
            if record is not None:
                return record
            renewed = lease.spec.renew_time
            age = time.time() - renewed.timestamp() if renewed else float("inf")
            if age > self.stale_after and self._take_over(lease, body):
                return None
            if time.monotonic() >= deadline:
                raise Unavailable(
                    "request_in_flight",
                    "another replica is still deciding this request id; retry with the same id",
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def _take_over(self, lease: Any, body: dict[str, Any]) -> bool:
        """The holder vanished without a record: reserve it for us, if nobody else did first."""
        body["metadata"]["resourceVersion"] = lease.metadata.resource_version
        try:
            self.leases.replace_namespaced_lease(body["metadata"]["name"], self.home, body)
        except client.ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        log.warning("took over abandoned request reservation %s", body["metadata"]["name"])
        return True

    def decided(self, key: RequestKey) -> Record | None:
        """The decision record for this key, by its request label, if a kubewrit key signed it.

        Whoever may create ActionRecords in the namespace could plant one under the label;
        a replay answers with it (and a PERMIT's writ), so only a genuine record counts.
        """
        page = self.custom.list_namespaced_custom_object(
            kube_api.GROUP,
            kube_api.VERSION,
            key.namespace or self.home,
            kube_api.RECORDS,
            label_selector=f"{kube_api.LABEL_REQUEST}={key.digest()},{kube_api.LABEL_KIND}=decision",
        )
        for item in page.get("items", []):
            spec = item["spec"]
            if spec.get("agent") != key.agent or spec.get("requestId") != key.request_id:
                continue
            record = signed_record(spec, self.trusted_keys)
            if record is not None:
                return record
            log.warning(
                "ActionRecord %s/%s claims request %s but no trusted kubewrit key signed it",
                item["metadata"].get("namespace"),
                item["metadata"].get("name"),
                key.digest(),
            )
        return None

    async def release(self, key: RequestKey) -> None:
        try:
            await asyncio.to_thread(
                self.leases.delete_namespaced_lease,
                f"kubewrit-request-{key.digest()}",
                self.home,
            )
        except Exception as exc:  # the reservation then ages out and is taken over
            log.warning("cannot release request reservation: %s", exc)

    async def collect_garbage(self, interval: float = 600.0) -> None:
        """Run forever: forget reservations older than `ttl`."""
        while True:
            try:
                await asyncio.to_thread(self._collect_once)
            except Exception:
                log.exception("request reservation clean-up failed")
            await asyncio.sleep(interval)

    def _collect_once(self) -> None:
        old = time.time() - self.ttl
        leases = self.leases.list_namespaced_lease(
            self.home, label_selector=f"app.kubernetes.io/component={COMPONENT}"
        )
        for lease in leases.items:
            renewed = lease.spec.renew_time
            if renewed is not None and renewed.timestamp() < old:
                self.leases.delete_namespaced_lease(lease.metadata.name, self.home)
