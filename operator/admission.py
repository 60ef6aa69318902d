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
    """kopf's server, but the URL handed to the API server can be set outright (--webhook-url),
    e.g. a Service DNS name on 443 while the pod listens on 9443."""

    def __init__(self, *, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.public_url = url

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            if self.public_url:
                client_config = dict(client_config)
                client_config["url"] = self.public_url.rstrip("/")
            yield client_config


def server(config: AdmissionConfig) -> Server:
    """The webhook server for `config`; a self-signed certificate unless one is mounted."""
    host = config.host or (config.listen_addr if config.listen_addr not in ("", "0.0.0.0", "::")
                           else "127.0.0.1")
    cert, key, ca = config.tls_cert, config.tls_key, config.tls_ca
    if cert is None or key is None:
        from urllib.parse import urlsplit

        url_host = urlsplit(config.url).hostname if config.url else None
        hosts = [h for h in (url_host, host, *config.extra_sans, "localhost") if h]
        cert, key = tls.self_signed(Path(tempfile.mkdtemp(prefix="kubewrit-operator-tls-")), hosts)
        ca = None
    return Server(addr=config.listen_addr, port=config.port, host=host, url=config.url,
                  certfile=str(cert), pkeyfile=str(key), cafile=str(ca) if ca else None)


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
