"""Creating a batch of API objects at once, through libcurl's multi interface.

Every decision in Kubernetes mode waits for its ActionRecord's create, and under load
the recorder creates a batch of them concurrently. Through the Kubernetes client each
create took a thread of its own and urllib3, http.client and the `email` package's
header parser on it: 0.7-1.0 ms of the webhook's CPU per record, most of what a decision
cost it. Here the recorder's own thread drives the whole batch in C over keep-alive
connections (0.2 ms per record, measured side by side), and no thread is woken per record.

It speaks to the API server as the Kubernetes client is configured to (host, CA,
client certificate, bearer token read again for every batch so a rotated token is
used, tls-server-name, proxy and no_proxy) and refuses, when built, a configuration it
cannot honour, rather than ignoring part of it. Nothing here knows what is created:
the ledger owns what a refusal means (`kube.records`).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit, urlunsplit

import pycurl
from kubernetes import client
from kubernetes.client.rest import should_bypass_proxies


class TransportError(ConnectionError):
    """No HTTP answer: the connection failed, or the create timed out."""


class UnsupportedConfiguration(ValueError):
    """The API client is configured in a way these creates cannot honour."""


@dataclass
class _Transfer:
    handle: pycurl.Curl
    answer: io.BytesIO


class Creates:
    """POST bodies to one API server concurrently; one libcurl multi handle per thread.

    `post` is called from any thread (each recorder has its own): every thread gets its
    own multi handle and keep-alive connections, never shared, so no lock is needed.
    """

    def __init__(
        self,
        configuration: client.Configuration,
        user_agent: str,
        connections: int = 16,
        timeout: float = 10.0,
    ) -> None:
        for unsupported in ("proxy_ssl_context", "socket_options"):
            if getattr(configuration, unsupported, None) is not None:
                raise UnsupportedConfiguration(
                    f"the Kubernetes configuration sets {unsupported}, which ActionRecord "
                    "creates (libcurl) cannot honour"
                )
        self.configuration = configuration
        self.user_agent = user_agent
        self.connections = connections
        self.timeout_ms = int(timeout * 1000)
        self._base, self._connect_to = _endpoint(
            str(configuration.host), configuration.tls_server_name
        )
        self._local = threading.local()

    def post(self, path: str, bodies: Sequence[bytes]) -> list[Exception | None]:
        """POST each body to `path` at once: None for each 2xx, else why not.

        A non-2xx answer is a `client.ApiException` carrying its status and body, as the
        Kubernetes client raises it; no answer at all is a `TransportError`.
        """
        multi, idle = self._thread_state()
        url, headers = self._base + path, self._headers()
        transfers = []
        for body in bodies:
            handle = idle.pop() if idle else self._new_handle()
            answer = io.BytesIO()
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.HTTPHEADER, headers)
            handle.setopt(pycurl.POSTFIELDS, body)
            handle.setopt(pycurl.WRITEDATA, answer)
            transfers.append(_Transfer(handle, answer))
        failed: dict[pycurl.Curl, TransportError] = {}
        for transfer in transfers:
            multi.add_handle(transfer.handle)
        try:
            running = len(transfers)
            while running:
                _, running = multi.perform()
                if running:  # until a socket is ready, or libcurl has timed work to do
                    soon = multi.timeout()  # ms; -1: nothing scheduled
                    multi.select(1.0 if soon < 0 else min(soon, 1000) / 1000)
            queued = 1
            while queued:
                queued, _, errors = multi.info_read()
                for handle, _code, message in errors:
                    failed[handle] = TransportError(message)
        finally:
            for transfer in transfers:
                multi.remove_handle(transfer.handle)
            idle.extend(transfer.handle for transfer in transfers)
        return [self._outcome(transfer, failed.get(transfer.handle)) for transfer in transfers]

    @staticmethod
    def _outcome(transfer: _Transfer, failure: TransportError | None) -> Exception | None:
        if failure is not None:
            return failure
        status = int(transfer.handle.getinfo(pycurl.RESPONSE_CODE))
        if 200 <= status < 300:
            return None
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        refused = client.ApiException(status=status, reason=reason)
        refused.body = transfer.answer.getvalue().decode("utf-8", "replace")
        return refused

    def _headers(self) -> list[str]:
        """Read for every batch: `auth_settings` refreshes a rotated service-account token."""
        headers = [
            "Content-Type: application/json",
            # The created object is never read back: kube-apiserver answers with its
            # metadata only instead of encoding the spec it was just sent (errors are
            # still a whole Status).
            "Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, "
            "application/json",
            f"User-Agent: {self.user_agent}",
            "Expect:",  # no 100-continue round trip before a body
        ]
        for auth in self.configuration.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers.append(f"{auth['key']}: {auth['value']}")
        return headers

    def _thread_state(self) -> tuple[pycurl.CurlMulti, list[pycurl.Curl]]:
        multi = getattr(self._local, "multi", None)
        if multi is None:
            multi = pycurl.CurlMulti()
            # As many keep-alive connections as concurrent creates, and no more: more
            # creates than that queue inside libcurl instead of opening new connections.
            multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, self.connections)
            multi.setopt(pycurl.M_MAXCONNECTS, self.connections)
            self._local.multi, self._local.idle = multi, []
        return multi, self._local.idle

    def _new_handle(self) -> pycurl.Curl:
        configuration = self.configuration
        handle = pycurl.Curl()
        handle.setopt(pycurl.POST, 1)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.TIMEOUT_MS, self.timeout_ms)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, self.timeout_ms)
        handle.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: threads are in use
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        if configuration.verify_ssl:
            if configuration.ssl_ca_cert:
                handle.setopt(pycurl.CAINFO, configuration.ssl_ca_cert)
            if configuration.ca_cert_data:
                data = configuration.ca_cert_data
                handle.setopt(pycurl.CAINFO_BLOB, data.encode() if isinstance(data, str) else data)
            if configuration.assert_hostname is False:
                handle.setopt(pycurl.SSL_VERIFYHOST, 0)
        else:
            handle.setopt(pycurl.SSL_VERIFYPEER, 0)
            handle.setopt(pycurl.SSL_VERIFYHOST, 0)
        if configuration.cert_file:
            handle.setopt(pycurl.SSLCERT, configuration.cert_file)
        if configuration.key_file:
            handle.setopt(pycurl.SSLKEY, configuration.key_file)
        self._route(handle)
        return handle

    def _route(self, handle: pycurl.Curl) -> None:
        """Proxy and server name exactly as the Kubernetes client would use them.

        libcurl would otherwise read proxies from the environment on its own; the client
        decides (its `proxy`, itself from the environment where it says so, and `no_proxy`).
        """
        configuration = self.configuration
        proxy = configuration.proxy
        if proxy and not should_bypass_proxies(configuration.host, configuration.no_proxy or ""):
            handle.setopt(pycurl.PROXY, proxy)
            if configuration.proxy_headers:
                handle.setopt(pycurl.HEADEROPT, pycurl.HEADER_SEPARATE)
                handle.setopt(
                    pycurl.PROXYHEADER,
                    [f"{key}: {value}" for key, value in configuration.proxy_headers.items()],
                )
        else:
            handle.setopt(pycurl.PROXY, "")
        if self._connect_to:
            handle.setopt(pycurl.CONNECT_TO, [self._connect_to])


def _endpoint(host: str, tls_server_name: str | None) -> tuple[str, str | None]:
    """The URL prefix to request, and where to connect when it names another host.

    With a tls-server-name the API server's certificate is checked for (and SNI sent to)
    that name while the connection goes to the configured host: the URL names the TLS
    name and libcurl's CONNECT_TO says where it really is.
    """
    base = host.rstrip("/")
    if not tls_server_name:
        return base, None
    url = urlsplit(base)
    if not url.hostname:
        raise UnsupportedConfiguration(f"cannot tell the API server's host from {host!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    server = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    renamed = url._replace(netloc=f"{tls_server_name}:{port}")
    return urlunsplit(renamed), f"{tls_server_name}:{port}:{server}:{port}"
