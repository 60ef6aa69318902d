"""Lease-based leader election: singleton work runs in exactly one replica at a time.

The protocol is client-go's: one `coordination.k8s.io/v1` Lease; every write is a
compare-and-swap on its resourceVersion, so two candidates can never both
believe they took it. A lease is expired when its holder has not renewed it
for `leaseDurationSeconds` *as measured on this replica's clock since it last
saw the record change* (so clock skew between replicas does not matter). A
leader that cannot renew within `renew_deadline` stops leading before anyone
else may start (renew_deadline < lease_duration).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubewrit.operator.config import LeaderConfig

log = logging.getLogger(__name__)


def _micro_time(moment: datetime | None = None) -> str:
    """MicroTime as the API server parses it (always six fraction digits)."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquire, renew and release one Lease; `leading` says whether singleton work may run."""

    def __init__(
        self,
        api: client.ApiClient,
        config: LeaderConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.config = config
        self.clock = clock
        self._observed: tuple[str | None, str | None] | None = None  # (holder, renewTime)
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self.transitions = 0

    @property
    def identity(self) -> str:
        return self.config.identity

    @property
    def leading(self) -> bool:
        """True only while the last successful renewal is younger than the renew deadline."""
        return (
            self._renewed_at is not None
            and self.clock() - self._renewed_at < self.config.renew_deadline
        )

    def _spec(self, acquire_time: datetime | None, transitions: int) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=max(1, round(self.config.lease_duration)),
            acquire_time=_micro_time(acquire_time),
            renew_time=_micro_time(),
            lease_transitions=transitions,
        )

    def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; returns whether this replica holds the lease now."""
        cfg = self.config
        try:
            lease = self.coordination.read_namespaced_lease(cfg.name, cfg.namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=cfg.name, namespace=cfg.namespace),
                spec=self._spec(None, 0),
            )
            try:
                self.coordination.create_namespaced_lease(cfg.namespace, body)
            except client.ApiException as race:
                if race.status == 409:  # another candidate created it first
                    return False
                raise
            self._renewed_at = self.clock()
            return True

        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or None
        observed = (holder, str(spec.renew_time) if spec.renew_time else None)
        if observed != self._observed:
            self._observed, self._observed_at = observed, self.clock()
        duration = spec.lease_duration_seconds or cfg.lease_duration
        expired = self.clock() - self._observed_at >= duration
        if holder and holder != self.identity and not expired:
            self._renewed_at = None
            return False

        mine = holder == self.identity
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(spec.acquire_time if mine else None, transitions)
        try:
            # metadata.resourceVersion is still the one we read: a compare-and-swap.
            self.coordination.replace_namespaced_lease(cfg.name, cfg.namespace, lease)
        except client.ApiException as exc:
            if exc.status == 409:  # someone else wrote it in between: not ours this round
                self._renewed_at = None
                return False
            raise
        if not mine:
            log.info(
                "leader election: %s acquired lease %s/%s (previous holder %s)",
                self.identity,
                cfg.namespace,
                cfg.name,
                holder or "none",
            )
        self._renewed_at = self.clock()
        return True

    def release(self) -> None:
        """Give the lease up on shutdown so another replica takes over without waiting."""
        if self._renewed_at is None:
            return
        cfg = self.config
        self._renewed_at = None
        try:
            lease = self.coordination.read_namespaced_lease(cfg.name, cfg.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                lease.spec.renew_time = _micro_time()
                if lease.spec.acquire_time:
                    lease.spec.acquire_time = _micro_time(lease.spec.acquire_time)
                self.coordination.replace_namespaced_lease(cfg.name, cfg.namespace, lease)
                log.info(
                    "leader election: %s released lease %s/%s",
                    self.identity,
                    cfg.namespace,
                    cfg.name,
                )
        except client.ApiException as exc:
            log.warning("leader election: could not release the lease: %s", exc.reason)

    def step(self) -> bool:
        """One round that never raises: errors count as "not renewed"."""
        try:
            return self.try_acquire_or_renew()
        except Exception as exc:
            log.warning("leader election: %s", getattr(exc, "reason", None) or exc)
            return self.leading


class Singleton:
    """Run `work()` every `interval` seconds, but only while this replica leads.

    A background thread: the kubernetes client is synchronous, and singleton
    work must not stall kopf's event loop (admission answers have deadlines).
    """

    def __init__(
        self, elector: LeaderElector, work: Callable[[LeaderElector], Any], interval: float
    ) -> None:
        self.elector = elector
        self.work = work
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubewrit-singleton", daemon=True)
        self.was_leading = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.elector.release()

    def _run(self) -> None:
        next_work = 0.0
        retry = self.elector.config.retry_period
        while not self._stop.is_set():
            leading = self.elector.step()
            if leading != self.was_leading:
                self.was_leading = leading
                log.info(
                    "leader election: %s is %s",
                    self.elector.identity,
                    "now leading" if leading else "not leading",
                )
            if leading and self.elector.clock() >= next_work:
                try:
                    self.work(self.elector)
                except Exception:
                    log.exception("singleton work failed; retrying in %.0fs", self.interval)
                next_work = self.elector.clock() + self.interval
            self._stop.wait(retry)
