"""A real node for hack/control-plane (`up --node`): containerd, kubelet, kube-proxy,
kube-scheduler and CoreDNS, so that pods run, get IPs, reach Services and resolve names.

Why these choices (see hack/README.md and /work/shared/notes/real-node.md):
- containerd, runc, the CNI plugins and conntrack come from Debian's packages (installed
  with apt-get when missing); kubelet, kube-proxy and kube-scheduler are built from the
  same pinned k8s.io/kubernetes as the control plane (wrapper module control-plane-src/node).
- No registry is reachable: the pause and CoreDNS images are static binaries built from
  Go modules (control-plane-src/pause, control-plane-src/coredns) packed here into
  one-layer OCI archives and imported with `ctr images import` under fully qualified
  names (the CRI normalizes short names to docker.io/... and would try to pull).
- This VM refuses negative oom_score_adj: containerd's CRI runs with
  restrict_oom_score_adj. cgroup v1 without systemd: kubelet uses the cgroupfs driver
  and no QoS cgroups.
- One node per machine (containerd's shim sockets, iptables, the CNI bridge are
  machine-wide): /run/kubewrit-node.json names the state dir that owns it.

Only the Python standard library is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

NODE_NAME = "kubewrit-node"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"
DNS_IP = "10.0.0.10"
BRIDGE = "kubewrit0"
PAUSE_IMAGE = "docker.io/kubewrit/pause:3.10"
COREDNS_VERSION = "v1.12.1"
COREDNS_IMAGE = f"docker.io/kubewrit/coredns:{COREDNS_VERSION}"
OWNER_FILE = Path("/run/kubewrit-node.json")
APT_PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "conntrack": "conntrack",
    "iptables": "iptables",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
}
# Node components, in start order; stopped in reverse before the control plane.
COMPONENTS = ("containerd", "kubelet", "kube-proxy", "kube-scheduler")


def _cp() -> Any:
    import control_plane  # hack/control_plane.py; imported lazily (it imports us)

    return control_plane


def node_dir(sd: Path) -> Path:
    return sd / "node"


def containerd_root() -> Path:
    """Persistent across `up`s: imported images stay (the cache holds the archives)."""
    return _cp().cache_root().parent / "node" / "containerd"


def socket_path(sd: Path) -> Path:
    return node_dir(sd) / "containerd.sock"


def node_ip() -> str:
    """The address of the interface holding the default route: pods reach the API server
    there, and it is the node's InternalIP."""
    r = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True, text=True)
    parts = r.stdout.split()
    if r.returncode != 0 or "src" not in parts:
        raise _cp().CPError(f"cannot find this machine's address (ip route get): {r.stderr}")
    return parts[parts.index("src") + 1]


# --------------------------------------------------------------------------- packages


def ensure_packages() -> None:
    missing = sorted(
        {
            pkg
            for what, pkg in APT_PACKAGES.items()
            if not (Path(what).exists() if what.startswith("/") else shutil.which(what))
        }
    )
    if not missing:
        return
    _cp().log(f"installing {' '.join(missing)} (apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise _cp().CPError(f"{' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-3000:]}")


# --------------------------------------------------------------------------- images


def write_oci_archive(out: Path, name: str, files: dict[str, Path], config: dict) -> None:
    """A one-layer OCI image archive (what `ctr images import` reads) holding `files`
    (path in image -> file on disk), annotated with its fully qualified name."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dest, src in sorted(files.items()):
            info = tar.gettarinfo(str(src), arcname=dest.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.mode = 0o755
            with open(src, "rb") as f:
                tar.addfile(info, f)
    layer = layer_buf.getvalue()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    cfg = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "hack/node.py write_oci_archive"}],
        },
        sort_keys=True,
    ).encode()
    cfg_digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cfg_digest,
                "size": len(cfg),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    man_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": man_digest,
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
    ).encode()
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w") as tar:

        def add(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for digest, data in ((layer_digest, layer), (cfg_digest, cfg), (man_digest, manifest)):
            add(f"blobs/sha256/{digest.split(':')[1]}", data)
    os.replace(tmp, out)


def archive_manifest_digest(archive: Path) -> tuple[str, str]:
    """(image name, manifest digest) of an OCI archive."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        index = json.loads(member.read())
    m = index["manifests"][0]
    ann = m.get("annotations", {})
    return ann.get("io.containerd.image.name") or ann.get(
        "org.opencontainers.image.ref.name", ""
    ), m["digest"]


def system_images(bins: dict[str, Path]) -> list[Path]:
    """The pause and CoreDNS image archives, made from the cached binaries."""
    out = []
    for name, binary, config in (
        (PAUSE_IMAGE, "pause", {"Entrypoint": ["/pause"], "User": "65535:65535"}),
        (COREDNS_IMAGE, "coredns", {"Entrypoint": ["/coredns"], "ExposedPorts": {"53/udp": {}}}),
    ):
        src = bins[binary]
        key = hashlib.sha256(src.read_bytes() + name.encode()).hexdigest()[:10]
        archive = src.parent.parent / f"{binary}-image-{key}.oci.tar"
        if not archive.exists():
            write_oci_archive(archive, name, {f"/{binary}": src}, config)
        out.append(archive)
    return out


def ctr(sd: Path, *args: str, check: bool = True, timeout: float = 120) -> str:
    r = subprocess.run(
        ["ctr", "--address", str(socket_path(sd)), "-n", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and r.returncode != 0:
        raise _cp().CPError(f"ctr {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def load_image(sd: Path, archive: Path) -> str:
    """Import an OCI archive into the node's containerd unless that digest is there."""
    name, digest = archive_manifest_digest(archive)
    for line in ctr(sd, "images", "ls").splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3 and cols[0] == name and cols[2] == digest:
            return name
    t0 = time.monotonic()
    ctr(sd, "images", "import", str(archive), timeout=600)
    _cp().log(f"imported {name} in {time.monotonic() - t0:.1f}s")
    return name


def prune_dev_images(sd: Path) -> None:
    """At `up` (no pod runs yet): drop kubewrit dev images whose archive hack/image no
    longer keeps; the store outlives `down`, and old builds only cost disk."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import image  # hack/image.py

    for name in ctr(sd, "images", "ls", "-q").split():
        if name.startswith(image.IMAGE_REPO + ":dev-") and not image.archive_path(name).exists():
            ctr(sd, "images", "rm", name, check=False)


# --------------------------------------------------------------------------- pki


def ensure_node_pki(pki: Path, ip: str) -> None:
    """Certificates the node needs: the kubelet's client identity (Node authorizer) and
    serving certificate for its IP (logs/exec from the API server), and the API server's
    client certificate towards kubelets."""
    cp = _cp()
    marker = pki / "node-complete"
    if marker.exists() and marker.read_text().strip() == ip:
        return
    client = (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    cp._sign(pki, "kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}", client)
    cp._sign(
        pki,
        "kubelet-serving",
        f"/CN={NODE_NAME}",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip},DNS:{NODE_NAME},IP:127.0.0.1\n",
    )
    cp._sign(
        pki,
        "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        client,
    )
    marker.write_text(ip + "\n")


def apiserver_args(pki: Path, ip: str) -> list[str]:
    """What the API server needs in node mode (replacing loopback-only flags)."""
    return [
        "--bind-address=0.0.0.0",
        f"--advertise-address={ip}",
        "--endpoint-reconciler-type=lease",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


# --------------------------------------------------------------------------- configs


def _write_configs(sd: Path, ip: str, ports: dict[str, int]) -> None:
    nd = node_dir(sd)
    pki = sd / "pki"
    for d in ("cni", "cni-ipam", "kubelet", "pod-logs", "containerd-state"):
        (nd / d).mkdir(parents=True, exist_ok=True)
    containerd_root().mkdir(parents=True, exist_ok=True)
    (nd / "containerd.toml").write_text(
        f"""version = 2
root = "{containerd_root()}"
state = "{nd / "containerd-state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket_path(sd)}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM refuses negative oom_score_adj (runc: "can't get final child's PID").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{nd / "cni"}"
"""
    )
    (nd / "cni" / "10-kubewrit.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "kubewrit",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        # No masquerading: pods talk to each other and to this machine;
                        # nothing is left in iptables when containers are removed by force.
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(nd / "cni-ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=2,
        )
    )
    (nd / "kubelet.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": ip,
                "port": ports["kubelet"],
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": ports["kubelet-healthz"],
                "tlsCertFile": str(pki / "kubelet-serving.crt"),
                "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": False},
                    "x509": {"clientCAFile": str(pki / "ca.crt")},
                },
                "authorization": {"mode": "AlwaysAllow"},
                "cgroupDriver": "cgroupfs",
                "cgroupsPerQOS": False,
                "enforceNodeAllocatable": [],
                "failSwapOn": False,
                "containerRuntimeEndpoint": f"unix://{socket_path(sd)}",
                "clusterDNS": [DNS_IP],
                "clusterDomain": "cluster.local",
                "podLogsDir": str(nd / "pod-logs"),
                # cAdvisor finds no filesystem stats for /dev/vda here: nothing may
                # depend on them (eviction, image GC, ephemeral storage).
                "localStorageCapacityIsolation": False,
                "evictionHard": {"memory.available": "100Mi"},
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "nodeStatusUpdateFrequency": "4s",
                "syncFrequency": "10s",
                "serializeImagePulls": False,
                "maxPods": 60,
                "shutdownGracePeriod": "0s",
                "rotateCertificates": False,
            },
            indent=2,
        )
    )
    (nd / "kube-proxy.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "iptables",
                "clusterCIDR": POD_CIDR,
                "hostnameOverride": NODE_NAME,
                "bindAddress": "0.0.0.0",
                "healthzBindAddress": f"127.0.0.1:{ports['kube-proxy']}",
                "metricsBindAddress": f"127.0.0.1:{ports['kube-proxy-metrics']}",
                "clientConnection": {"kubeconfig": str(sd / "kubeconfig.admin")},
                # Leave the machine's conntrack sysctls alone.
                "conntrack": {"maxPerCore": 0, "min": 0},
                "iptables": {"syncPeriod": "5s", "minSyncPeriod": "0s"},
            },
            indent=2,
        )
    )
    kubelet_kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": f"https://{ip}:{ports['kube-apiserver']}",
                    "certificate-authority": str(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": "kubelet",
                "user": {
                    "client-certificate": str(pki / "kubelet-client.crt"),
                    "client-key": str(pki / "kubelet-client.key"),
                },
            }
        ],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "kubelet"}}],
        "current-context": "c",
    }
    (nd / "kubeconfig.kubelet").write_text(json.dumps(kubelet_kc, indent=2))


def _sysctls() -> None:
    for key, value in (
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
        ("net/ipv4/conf/all/route_localnet", "1"),
    ):
        with contextlib.suppress(OSError):
            Path("/proc/sys", key).write_text(value)


COREDNS_MANIFEST = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 2s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 5
        }
        forward . /etc/resolv.conf
        cache 5
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      containers:
        - name: coredns
          image: IMAGE
          imagePullPolicy: Never
          args: ["-conf", "/etc/coredns/Corefile"]
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
          readinessProbe:
            httpGet: {path: /ready, port: 8181}
            periodSeconds: 1
          livenessProbe:
            httpGet: {path: /health, port: 8080}
          resources:
            requests: {cpu: 50m, memory: 32Mi}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
        - name: config
          configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP, targetPort: 53}
    - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
""".replace("IMAGE", COREDNS_IMAGE).replace("DNS_IP", DNS_IP)


# --------------------------------------------------------------------------- up / down


def claim(sd: Path) -> None:
    """One node per machine: refuse if another state dir's node is alive."""
    cp = _cp()
    try:
        owner = json.loads(OWNER_FILE.read_text())
    except (OSError, ValueError):
        owner = {}
    if owner and owner.get("state_dir") != str(sd):
        other = Path(owner["state_dir"])
        st = cp.load_state(other)
        alive = [
            n
            for n, p in st.get("processes", {}).items()
            if n in COMPONENTS and cp._pid_alive(p["pid"], p.get("start"))
        ]
        if alive:
            raise cp.CPError(
                f"a kubewrit node from {other} runs on this machine ({', '.join(alive)}): "
                f"stop it first (KUBEWRIT_CONTROL_PLANE_DIR={other} hack/control-plane down)"
            )
        stop(other, load=True)
    OWNER_FILE.write_text(json.dumps({"state_dir": str(sd)}) + "\n")


def start(sd: Path, st: dict, bins: dict[str, Path], ip: str, timeout: float = 90) -> None:
    """Start containerd, import the system images, start kubelet, kube-proxy,
    kube-scheduler, deploy CoreDNS; wait until the node is Ready and DNS answers."""
    cp = _cp()
    pki = sd / "pki"
    ports = {
        "kube-apiserver": st["ports"]["kube-apiserver"],
        "kubelet": cp.free_port(),
        "kubelet-healthz": cp.free_port(),
        "kube-proxy": cp.free_port(),
        "kube-proxy-metrics": cp.free_port(),
        "kube-scheduler": cp.free_port(),
    }
    st["ports"].update({k: v for k, v in ports.items() if k != "kube-apiserver"})
    st["node"] = {"name": NODE_NAME, "ip": ip}
    cp.save_state(sd, st)
    _write_configs(sd, ip, ports)
    _sysctls()

    containerd = cp._spawn(
        sd, "containerd", ["containerd", "--config", str(node_dir(sd) / "containerd.toml")]
    )

    def containerd_ok() -> tuple[bool, str]:
        if not socket_path(sd).exists():
            return False, "no socket yet"
        r = subprocess.run(
            ["ctr", "--address", str(socket_path(sd)), "version"], capture_output=True, text=True
        )
        return r.returncode == 0, r.stderr

    cp._wait(sd, "containerd", containerd, containerd_ok, 30, "serving")
    for archive in system_images(bins):
        load_image(sd, archive)
    prune_dev_images(sd)

    kubelet = cp._spawn(
        sd,
        "kubelet",
        [
            str(bins["kubelet"]),
            f"--config={node_dir(sd) / 'kubelet.yaml'}",
            f"--kubeconfig={node_dir(sd) / 'kubeconfig.kubelet'}",
            f"--root-dir={node_dir(sd) / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={ip}",
            "--v=1",
        ],
    )
    scheduler = cp._spawn(
        sd,
        "kube-scheduler",
        [
            str(bins["kube-scheduler"]),
            f"--kubeconfig={sd / 'kubeconfig.admin'}",
            f"--authentication-kubeconfig={sd / 'kubeconfig.admin'}",
            f"--authorization-kubeconfig={sd / 'kubeconfig.admin'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--v=1",
        ],
    )
    proxy = cp._spawn(
        sd,
        "kube-proxy",
        [str(bins["kube-proxy"]), f"--config={node_dir(sd) / 'kube-proxy.yaml'}", "--v=1"],
    )
    server = st["server"]

    def node_ready() -> tuple[bool, str]:
        code, body = cp._https_get(f"{server}/api/v1/nodes/{NODE_NAME}", pki)
        if code != 200:
            return False, f"{code} {body[:200]}"
        conds = {c["type"]: c for c in json.loads(body)["status"].get("conditions", [])}
        ready = conds.get("Ready", {})
        return ready.get("status") == "True", json.dumps(ready)

    def proxy_ok() -> tuple[bool, str]:
        code, body = cp._http_get(f"http://127.0.0.1:{ports['kube-proxy']}/healthz")
        return code == 200, f"{code} {body[:200]}"

    def sched_ok() -> tuple[bool, str]:
        code, body = cp._https_get(
            f"https://127.0.0.1:{ports['kube-scheduler']}/healthz", pki, verify=False
        )
        return code == 200, f"{code} {body[:200]}"

    cp._wait(sd, "kubelet", kubelet, node_ready, timeout, f"registering node {NODE_NAME} Ready")
    cp._wait(sd, "kube-scheduler", scheduler, sched_ok, 30, "healthy")
    cp._wait(sd, "kube-proxy", proxy, proxy_ok, 30, "healthy")

    r = subprocess.run(
        [str(bins["kubectl"]), f"--kubeconfig={sd / 'kubeconfig.admin'}", "apply", "-f", "-"],
        input=COREDNS_MANIFEST,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise cp.CPError(f"deploying CoreDNS failed: {r.stderr}")

    def dns_ok() -> tuple[bool, str]:
        code, body = cp._https_get(
            f"{server}/apis/apps/v1/namespaces/kube-system/deployments/coredns", pki
        )
        if code != 200:
            return False, f"{code} {body[:200]}"
        status = json.loads(body).get("status", {})
        if (status.get("availableReplicas") or 0) < 1:
            return False, json.dumps(status)[:400]
        # Available is not answering: the Service's endpoints and kube-proxy's rules
        # follow the pod by a moment. Ask through the Service IP, as a pod would.
        return resolves(DNS_IP, "kubernetes.default.svc.cluster.local")

    try:
        cp._wait(sd, "kubelet", kubelet, dns_ok, timeout, "answering DNS through the Service")
    except cp.CPError as e:
        raise cp.CPError(f"{e}\n{pod_summary(sd, bins)}") from None


def resolves(server: str, name: str, timeout: float = 1.0) -> tuple[bool, str]:
    """One A query over UDP (RFC 1035 wire format, no library): does ``server`` answer
    ``name`` with at least one address?"""
    query_id = secrets.randbits(16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + b"\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (server, 53))
            reply = s.recv(512)
        except OSError as e:
            return False, f"no DNS answer from {server}: {e}"
    rid, flags, _, answers, _, _ = struct.unpack("!HHHHHH", reply[:12])
    rcode = flags & 0xF
    if rid != query_id or rcode != 0 or answers == 0:
        return False, f"DNS {server} for {name}: rcode {rcode}, {answers} answers"
    return True, f"{name} resolves"


def pod_summary(sd: Path, bins: dict[str, Path]) -> str:
    r = subprocess.run(
        [
            str(bins["kubectl"]),
            f"--kubeconfig={sd / 'kubeconfig.admin'}",
            "get",
            "pods,events",
            "-n",
            "kube-system",
            "-o",
            "wide",
        ],
        capture_output=True,
        text=True,
    )
    return f"--- kubectl get pods,events -n kube-system ---\n{r.stdout}{r.stderr}"


def _mounts_under(prefixes: list[str]) -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4].replace("\\040", " ")
            if any(mp == p or mp.startswith(p.rstrip("/") + "/") for p in prefixes):
                out.append(mp)
    return out


def stop(sd: Path, load: bool = False, quiet: bool = False) -> None:
    """Stop the node and remove everything it made on the machine: pods' containers,
    network namespaces, mounts, the bridge, kube-proxy's iptables chains."""
    cp = _cp()
    st = cp.load_state(sd)
    procs = st.get("processes", {})
    bins = st.get("bin", {})
    for name in ("kubelet", "kube-scheduler", "kube-proxy"):
        info = procs.get(name)
        if info and cp._pid_alive(info["pid"], info.get("start")):
            if not quiet:
                cp.log(f"stopping {name} (pid {info['pid']})")
            cp._stop_pid(info["pid"], info.get("start"))
    info = procs.get("containerd")
    containerd_alive = bool(info and cp._pid_alive(info["pid"], info.get("start")))
    if containerd_alive and socket_path(sd).exists():
        # Every pod container, including sandboxes: SIGKILL, then delete.
        with contextlib.suppress(Exception):
            tasks = [ln.split()[0] for ln in ctr(sd, "tasks", "ls").splitlines()[1:] if ln]
            for t in tasks:
                ctr(sd, "tasks", "kill", "-s", "SIGKILL", t, check=False, timeout=10)
            deadline = time.monotonic() + 10
            for t in tasks:
                while time.monotonic() < deadline:
                    r = ctr(sd, "tasks", "delete", t, check=False, timeout=10)
                    if "not found" in r or "STOPPED" not in ctr(sd, "tasks", "ls", check=False):
                        break
                    time.sleep(0.2)
                ctr(sd, "tasks", "delete", "-f", t, check=False, timeout=10)
            for c in ctr(sd, "containers", "ls", "-q").split():
                ctr(sd, "containers", "delete", c, check=False, timeout=30)
    if info:
        if not quiet:
            cp.log(f"stopping containerd (pid {info['pid']})")
        cp._stop_pid(info["pid"], info.get("start"))
    # Anything a crashed run left: shims and their containers, mounts, netns, bridge.
    with contextlib.suppress(Exception):
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
                if (
                    cmd
                    and cmd[0].endswith(b"containerd-shim-runc-v2")
                    and str(node_dir(sd)).encode() in b" ".join(cmd) + _environ(pid_dir)
                ):
                    os.kill(int(pid_dir.name), 9)
    nd = node_dir(sd)
    for mp in sorted(
        _mounts_under([str(nd), str(containerd_root()), "/run/netns", "/var/run/netns"]),
        key=len,
        reverse=True,
    ):
        subprocess.run(["umount", "-l", mp], capture_output=True)
    for ns in [*Path("/run/netns").glob("cni-*")]:
        with contextlib.suppress(OSError):
            ns.unlink()
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    if "kube-proxy" in bins and Path(bins["kube-proxy"]).exists():
        subprocess.run([bins["kube-proxy"], "--cleanup"], capture_output=True, timeout=60)
    _remove_kube_chains()
    shutil.rmtree(nd, ignore_errors=True)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(OWNER_FILE.read_text()).get("state_dir") == str(sd):
            OWNER_FILE.unlink()


def _remove_kube_chains() -> None:
    """The KUBE-* chains kubelet (and kube-proxy) leave in iptables, with their jumps."""
    for table in ("filter", "nat", "mangle"):
        r = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True)
        chains = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("-N KUBE-")]
        for line in r.stdout.splitlines():
            parts = shlex.split(line)
            if parts[:1] == ["-A"] and parts[1] not in chains and "KUBE-" in line:
                subprocess.run(["iptables", "-t", table, "-D", *parts[1:]], capture_output=True)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)


def _environ(pid_dir: Path) -> bytes:
    try:
        return (pid_dir / "environ").read_bytes()
    except OSError:
        return b""
