"""Fixtures for tests against a real Kubernetes control plane.

The control plane is the one ``hack/control-plane`` runs: etcd, kube-apiserver
(RBAC, service-account tokens, admission webhooks and ValidatingAdmissionPolicy
on) and kube-controller-manager (namespace deletion, garbage collection,
service accounts) as local processes on loopback, built from Go modules at the
versions in ``hack/versions.env`` and cached outside the clone.

Tests that use it are marked ``@pytest.mark.kube`` (any test using the
``control_plane`` fixture gets the marker automatically). If the control plane
cannot start, those tests ERROR with the reason; they are never skipped.

Fixtures
--------
``control_plane`` (session)
    A :class:`ControlPlane`. Brought up once per test session with
    ``hack/control-plane up --owner-pid`` and stopped at the end (or by a
    watchdog if pytest dies). Concurrent sessions in one clone share it; it
    stops when the last one ends. One started by hand (``hack/control-plane
    up``) is reused and left running; ``KUBEWRIT_CONTROL_PLANE_KEEP=1`` leaves
    the one this session starts running for the next. ``KUBEWRIT_CONTROL_PLANE_DIR``
    selects the state dir (default ``<clone>/.control-plane``).

``kube_namespace`` (function)
    Name of a fresh namespace, deleted (without waiting) after the test.

``webhook_server`` (function)
    Factory: ``webhook_server(handler) -> WebhookServer`` runs an HTTPS server
    on 127.0.0.1 in a thread, with a certificate the test's own CA signed.
    ``handler(review: dict) -> dict`` gets each AdmissionReview request's
    ``request`` and returns the ``response`` fields (``uid`` is filled in),
    e.g. ``{"allowed": False, "status": {"message": "no"}}``. Register it
    with ``clientConfig: {url: srv.url("/validate"), caBundle: srv.ca_bundle}``.
    ``srv.calls`` lists the requests received. For other protocols (e.g. CRD
    conversion) pass ``raw=True``: the handler then gets and returns the
    whole JSON body.

Users
-----
``admin`` (group system:masters), ``alice`` (group kubewrit-approvers) and
``bob`` (group kubewrit-users) authenticate with client certificates; each is
a context in ``control_plane.kubeconfig`` and has its own single-context file
``control_plane.kubeconfig_for(user)``. Alice and bob have no permissions
until a test binds a (Cluster)Role to the user or group.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"
CONTROL_PLANE = HACK / "control-plane"
USERS = ("admin", "alice", "bob")

sys.path.insert(0, str(HACK))
import control_plane as _cp  # noqa: E402  (hack/control_plane.py, stdlib only)

sys.path.remove(str(HACK))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kube: needs the local Kubernetes control plane started by hack/control-plane"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = True
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kube)
            if first:
                first = False
                # A cold build of the binaries (tens of minutes) happens in the
                # first kube test's setup; don't let a per-test timeout kill it.
                try:
                    cached = all(p.is_file() for p in _cp.binary_paths().values())
                except Exception:
                    cached = True
                if not cached and item.get_closest_marker("timeout") is None:
                    item.add_marker(pytest.mark.timeout(5400))


@dataclass
class ControlPlane:
    """A running control plane and the tools wired to it.

    Attributes:
        server: API server URL, ``https://127.0.0.1:<port>``.
        state_dir: where certs, kubeconfigs and component logs live
            (``logs/etcd.log``, ``logs/kube-apiserver.log``,
            ``logs/kube-controller-manager.log``).
        kubeconfig: admin kubeconfig holding the contexts admin, alice, bob
            (current context: admin).
        ca_file: the cluster CA certificate (PEM) that signed the API server's
            serving certificate and the users' client certificates.
        bin: binary name -> path: etcd, kube-apiserver,
            kube-controller-manager, kubectl, helm.
        kubectl_path, helm_path: the pinned kubectl and helm.
        versions: the contents of hack/versions.env.
    """

    server: str
    state_dir: Path
    kubeconfig: Path
    ca_file: Path
    bin: dict[str, Path]
    versions: dict[str, str]
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def kubectl_path(self) -> Path:
        return self.bin["kubectl"]

    @property
    def helm_path(self) -> Path:
        return self.bin["helm"]

    def kubeconfig_for(self, user: str = "admin") -> Path:
        """A kubeconfig whose only (current) context is ``user``."""
        if user not in USERS:
            raise ValueError(f"unknown user {user!r}; known: {USERS}")
        return self.state_dir / f"kubeconfig.{user}"

    def env(self, user: str = "admin") -> dict[str, str]:
        """Environment for a subprocess that should talk to this cluster as ``user``
        (KUBECONFIG set, the pinned kubectl/helm first on PATH)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig_for(user))
        bins = sorted({str(p.parent) for p in self.bin.values()})
        env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
        # helm keeps caches/config under HOME by default; keep them per state dir.
        for var, sub in (
            ("HELM_CACHE_HOME", "helm/cache"),
            ("HELM_CONFIG_HOME", "helm/config"),
            ("HELM_DATA_HOME", "helm/data"),
        ):
            env.setdefault(var, str(self.state_dir / sub))
        return env

    def kubectl(
        self,
        *args: str,
        user: str = "admin",
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as ``user``; text output.

        With ``check=True`` a non-zero exit raises ``AssertionError`` showing
        the command, stdout and stderr; with ``check=False`` inspect
        ``.returncode`` / ``.stderr`` yourself (e.g. to assert a denial).
        """
        return self._run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig_for(user)}", *args],
            user,
            input,
            check,
            timeout,
        )

    def delete_namespace(self, name: str) -> None:
        """Delete a test's namespace, without waiting for it to go.

        Policies an operator timed (limits) carry its finalizer, which only a running
        operator removes; a test's operator is gone by now, and the namespace would stay
        Terminating, kube-apiserver retrying it, for the rest of the run. So it goes here.
        """
        listed = self.kubectl(
            "get", "agentpolicies.kubewrit.io", "-n", name, "-o", "name", check=False
        )
        for policy in listed.stdout.split() if listed.returncode == 0 else ():
            self.kubectl(
                "patch", policy, "-n", name, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False,
            )  # fmt: skip
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def helm(
        self,
        *args: str,
        user: str = "admin",
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned helm as ``user`` (same contract as :meth:`kubectl`)."""
        return self._run(
            [str(self.helm_path), f"--kubeconfig={self.kubeconfig_for(user)}", *args],
            user,
            input,
            check,
            timeout,
        )

    def _run(
        self, cmd: list[str], user: str, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env(user)
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"command failed (exit {r.returncode}): {' '.join(cmd)}\n"
                f"--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
            )
        return r

    def api_client_for(self, user: str = "admin") -> Any:
        """A ``kubernetes.client.ApiClient`` authenticated as ``user`` (cached)."""
        if user not in self._clients:
            from kubernetes import config as kconfig

            self._clients[user] = kconfig.new_client_from_config(
                config_file=str(self.kubeconfig_for(user))
            )
        return self._clients[user]

    @property
    def api_client(self) -> Any:
        """``kubernetes.client.ApiClient`` for the admin."""
        return self.api_client_for("admin")

    def log_tail(self, component: str, lines: int = 40) -> str:
        """Tail of a component's log (etcd, kube-apiserver, kube-controller-manager)."""
        return _cp.log_tail(self.state_dir, component, lines)

    def close(self) -> None:
        for c in self._clients.values():
            with contextlib.suppress(Exception):
                c.close()
        self._clients.clear()


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Any:
    """The session's :class:`ControlPlane` (see the module docstring)."""
    sd = _cp.state_dir()
    keep = _truthy(os.environ.get("KUBEWRIT_CONTROL_PLANE_KEEP"))
    cmd = [sys.executable, str(HACK / "control_plane.py"), "up"]
    if not keep:
        # This session becomes an owner: the control plane stops when the last
        # owning session releases it or dies (a watchdog checks), while one
        # started by hand (`hack/control-plane up`) is reused and left running.
        cmd += ["--owner-pid", str(os.getpid())]
    capman = request.config.pluginmanager.getplugin("capturemanager")
    ctx = capman.global_and_fixture_disabled() if capman else _nullctx()
    t0 = time.monotonic()
    messages: list[str] = []
    with ctx:
        # Progress of a cold build goes straight to the terminal as it comes.
        sys.stderr.write("\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            messages.append(line)
        rc = proc.wait()
    if rc != 0:
        tail = "".join(messages[-60:])
        pytest.fail(
            f"hack/control-plane up failed (exit {rc}) after {time.monotonic() - t0:.0f}s; "
            f"Kubernetes tests cannot run. Logs: {sd}/logs/\n{tail}",
            pytrace=False,
        )
    st = _cp.load_state(sd)
    cp = ControlPlane(
        server=st["server"],
        state_dir=sd,
        kubeconfig=sd / "kubeconfig",
        ca_file=sd / "pki" / "ca.crt",
        bin={k: Path(v) for k, v in st["bin"].items()},
        versions=st.get("versions", {}),
    )
    yield cp
    cp.close()
    if not keep:
        subprocess.run(
            [
                sys.executable,
                str(HACK / "control_plane.py"),
                "release",
                "--owner-pid",
                str(os.getpid()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


@contextlib.contextmanager
def fresh_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace (name ``kt-<random>``), deleted afterwards."""
    name = f"kt-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        control_plane.delete_namespace(name)


@pytest.fixture
def kube_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace, deleted after the test."""
    with fresh_namespace(control_plane) as name:
        yield name


# --------------------------------------------------------------------------- TLS + webhook server


@dataclass
class TLSMaterial:
    """A CA and a serving certificate for 127.0.0.1/localhost, as PEM files."""

    ca_pem: bytes
    cert_file: Path
    key_file: Path

    @property
    def ca_bundle(self) -> str:
        """base64 of the CA PEM, for ``clientConfig.caBundle``."""
        return base64.b64encode(self.ca_pem).decode()


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TLSMaterial:
    """Generate a throwaway CA and a server certificate for ``hosts`` (IPs or DNS names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubewrit-test-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TLSMaterial(ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


class WebhookServer:
    """HTTPS server on 127.0.0.1:<free port> answering AdmissionReview (or raw JSON)."""

    def __init__(
        self, handler: Callable[[dict], dict], tls: TLSMaterial, raw: bool = False
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.raw = raw
        self.calls: list[dict] = []
        self.errors: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    if outer.raw:
                        outer.calls.append(body)
                        out = outer.handler(body)
                    else:
                        req = body["request"]
                        outer.calls.append(req)
                        resp = dict(outer.handler(req))
                        resp["uid"] = req["uid"]
                        out = {
                            "apiVersion": body.get("apiVersion", "admission.k8s.io/v1"),
                            "kind": "AdmissionReview",
                            "response": resp,
                        }
                    data = json.dumps(out).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except Exception as e:
                    outer.errors.append(repr(e))
                    self.send_error(500, repr(e))

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def ca_bundle(self) -> str:
        return self.tls.ca_bundle

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook_server() -> Any:
    """Factory for :class:`WebhookServer` (see the module docstring); all closed after the test."""
    servers: list[WebhookServer] = []
    tmp = Path(tempfile.mkdtemp(prefix="kubewrit-webhook-"))

    def make(handler: Callable[[dict], dict], raw: bool = False) -> WebhookServer:
        tls = make_tls(tmp / str(len(servers)))
        srv = WebhookServer(handler, tls, raw=raw)
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.close()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
