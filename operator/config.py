"""Operator configuration: every knob is a CLI flag with an environment default.

Flags win over the environment, the environment over the defaults, so the Helm
chart can set everything through `env:` while a developer overrides one thing
on the command line.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str | float | int | None) -> float:
    """`90`, `90s`, `15m`, `12h`, `30d` -> seconds; empty or 0 means "off" (0.0)."""
    if text is None or text == "":
        return 0.0
    if isinstance(text, int | float):
        return float(text)
    found = _DURATION.match(str(text))
    if not found:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 12h, 30d)")
    return float(found.group(1)) * _UNITS[found.group(2)]


def env(name: str, default: str = "") -> str:
    return os.environ.get(f"KUBEWRIT_OPERATOR_{name}", default)


def default_identity() -> str:
    """Pod name in a cluster (HOSTNAME), plus the pid so two local processes differ."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{os.getpid()}"


@dataclass
class RetentionConfig:
    """Records older than `max_age` or beyond `max_count` per namespace are exported, then cut."""

    max_age: float = 0.0
    max_count: int = 0
    sink: Path = Path("kubewrit-records.jsonl")
    interval: float = 60.0
    # kubewrit's own namespace: cuts go next to the anchors there, and the key that signs
    # them is published there with the webhook's keys.
    home: str = "kubewrit-system"
    signing_key: Path = Path("/var/run/kubewrit/operator-key.pem")

    @property
    def enabled(self) -> bool:
        return self.max_age > 0 or self.max_count > 0


@dataclass
class LeaderConfig:
    """A coordination.k8s.io/v1 Lease elects the replica that runs singleton work."""

    name: str = "kubewrit-operator"
    namespace: str = "kubewrit-system"
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass
class AdmissionConfig:
    """Where the admission webhooks listen and how the API server reaches them."""

    enabled: bool = True
    listen_addr: str = "0.0.0.0"
    port: int = 9443
    host: str | None = None
    url: str | None = None
    service: str | None = None  # "namespace/name:port": the API server calls a Service
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    managed: str = "kubewrit.io"
    extra_sans: tuple[str, ...] = ()


@dataclass
class Config:
    kubeconfig: Path | None = None
    namespaces: tuple[str, ...] = ()
    liveness: str | None = None
    verbose: bool = False
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    leader: LeaderConfig = field(default_factory=LeaderConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def governs(self, namespace: str | None) -> bool:
        """A namespaced operator admits everything outside its namespaces (it is not theirs)."""
        return self.clusterwide or namespace in self.namespaces
