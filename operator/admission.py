"""How the API server reaches the admission handlers: kopf's webhook server, managed config.

kopf serves the handlers over HTTPS and keeps the Validating/Mutating
WebhookConfigurations (named `kubewrit.io`) pointing at this server with the
right caBundle. The handlers are `persistent`, so the configurations stay when
the operator stops: with failurePolicy Fail, an absent operator means refused
writes, never unchecked ones (fail closed).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
from kubewrit.operator import tls
from kubewrit.operator.config import AdmissionConfig


class Server(kopf.WebhookServer):
    """kopf's server, but what the API server is told can be set outright: a URL
    (--webhook-url) or, in a cluster, a Service (--webhook-service namespace/name:port),
    since an API server often cannot resolve cluster DNS names itself."""

    def __init__(
        self, *, url: str | None = None, service: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.public_url = url
        self.service = parse_service(service) if service else None

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            config = dict(client_config)
            if self.service:
                config.pop("url", None)
                config["service"] = dict(self.service)
            elif self.public_url:
                config["url"] = self.public_url.rstrip("/")
            yield config


def parse_service(text: str) -> dict[str, Any]:
    """`namespace/name:port` (port defaults to 443) -> a webhook clientConfig.service."""
    ref, _, port = text.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ValueError(f"--webhook-service must be namespace/name[:port], not {text!r}")
    return {"namespace": namespace, "name": name, "port": int(port or 443)}


def server(config: AdmissionConfig) -> Server:
    """The webhook server for `config`; a self-signed certificate unless one is mounted."""
    host = config.host or (
        config.listen_addr if config.listen_addr not in ("", "0.0.0.0", "::") else "127.0.0.1"
    )
    cert, key, ca = config.tls_cert, config.tls_key, config.tls_ca
    if cert is None or key is None:
        from urllib.parse import urlsplit

        url_host = urlsplit(config.url).hostname if config.url else None
        service_hosts: list[str] = []
        if config.service:
            svc = parse_service(config.service)
            service_hosts = [f"{svc['name']}.{svc['namespace']}.svc", svc["name"]]
        hosts = [h for h in (url_host, *service_hosts, host, *config.extra_sans, "localhost") if h]
        cert, key = tls.self_signed(Path(tempfile.mkdtemp(prefix="kubewrit-operator-tls-")), hosts)
        ca = None
    return Server(
        addr=config.listen_addr,
        port=config.port,
        host=host,
        url=config.url,
        service=config.service,
        certfile=str(cert),
        pkeyfile=str(key),
        cafile=str(ca) if ca else None,
    )


def configure(settings: kopf.OperatorSettings, config: AdmissionConfig) -> None:
    if not config.enabled:
        disable(settings)
        return
    settings.admission.server = server(config)
    settings.admission.managed = config.managed


async def _no_server(fn: Any) -> AsyncIterator[Any]:
    """Admission handled elsewhere (other replicas): accept nothing, yield no client config."""
    import asyncio

    await asyncio.Event().wait()
    yield {}  # pragma: no cover - never reached


def disable(settings: kopf.OperatorSettings) -> None:
    """Run without serving admission (handlers stay registered; kopf requires a server)."""
    settings.admission.server = _no_server
    settings.admission.managed = None
