#!/usr/bin/env python3
"""kubewrit development control plane: etcd + kube-apiserver + kube-controller-manager
as local processes on loopback, for development and CI (like envtest).

Usage: hack/control-plane COMMAND

  build        build (or find cached) etcd, kube-apiserver, kube-controller-manager,
               kubectl and helm at the versions pinned in hack/versions.env
  up           build if needed, then start the control plane; prints elapsed time
  up --node    ... and a real node (containerd, kubelet, kube-proxy, kube-scheduler,
               CoreDNS): pods run (hack/node.py)
  load ARCHIVE import an OCI image archive into the node's containerd
  down         stop every process `up` started (by recorded pid) and remove state
  env          print shell exports: eval "$(hack/control-plane env)"
  status       print what runs
  logs [NAME]  print the tail of a component log (etcd, kube-apiserver, kube-controller-manager)
  gen-modules  regenerate hack/control-plane-src/*/go.mod and go.sum from versions.env

Environment:
  KUBEWRIT_CONTROL_PLANE_CACHE  binary cache root (default ~/.cache/kubewrit/control-plane)
  KUBEWRIT_CONTROL_PLANE_DIR    state dir: certs, kubeconfigs, logs, pids
                                (default <clone>/.control-plane, git-ignored)
  KUBEWRIT_GO                   go binary (default: go on PATH, else /usr/local/go/bin/go)

Only the Python standard library and the openssl command are used.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = HACK_DIR.parent
SRC_DIR = HACK_DIR / "control-plane-src"
VERSIONS_FILE = HACK_DIR / "versions.env"

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")

# Test identities. Each gets a client certificate (CN=user, O=groups) signed by
# the cluster CA, a context of the same name in <state>/kubeconfig and a
# single-context file <state>/kubeconfig.<name>.
USERS = {
    "admin": {"cn": "kubewrit-admin", "groups": ["system:masters"]},
    "alice": {"cn": "alice", "groups": ["kubewrit-approvers"]},
    "bob": {"cn": "bob", "groups": ["kubewrit-users"]},
}


class CPError(Exception):
    """A failure with a message meant for the person running the command."""


def log(msg: str) -> None:
    print(f"[control-plane] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- versions


def read_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, _, v = line.partition("=")
        out[k.strip()] = v.strip().strip('"')
    for k in ("KUBERNETES_VERSION", "ETCD_VERSION", "HELM_VERSION"):
        if k not in out:
            raise CPError(f"{VERSIONS_FILE} lacks {k}")
    return out


def staging_version(k8s_version: str) -> str:
    # k8s.io/kubernetes v1.X.Y <-> staging modules v0.X.Y
    return "v0." + k8s_version.lstrip("v").split(".", 1)[1]


# --------------------------------------------------------------------------- paths


def cache_root() -> Path:
    env = os.environ.get("KUBEWRIT_CONTROL_PLANE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubewrit" / "control-plane"


def state_dir() -> Path:
    env = os.environ.get("KUBEWRIT_CONTROL_PLANE_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".control-plane"


def go_binary() -> str:
    env = os.environ.get("KUBEWRIT_GO")
    if env:
        return env
    found = shutil.which("go")
    if found:
        return found
    if os.path.exists("/usr/local/go/bin/go"):
        return "/usr/local/go/bin/go"
    raise CPError("no Go toolchain: install Go >= 1.23 or set KUBEWRIT_GO")


# --------------------------------------------------------------------------- building


def _targets(v: dict[str, str]) -> dict[str, dict]:
    """What each wrapper module builds, and how."""
    kv = v["KUBERNETES_VERSION"]
    major, minor = kv.lstrip("v").split(".")[:2]
    kld = ["-s", "-w"]
    for p in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        kld += [
            f"-X {p}.gitVersion={kv}",
            f"-X {p}.gitMajor={major}",
            f"-X {p}.gitMinor={minor}",
            f"-X {p}.gitTreeState=clean",
            f"-X {p}.buildDate=1970-01-01T00:00:00Z",
        ]
    hv = v["HELM_VERSION"]
    helm_ld = [
        "-s",
        "-w",
        f"-X helm.sh/helm/v3/internal/version.version={hv}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    for p in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        helm_ld += [f"-X {p}.k8sVersionMajor={major}", f"-X {p}.k8sVersionMinor={minor}"]
    return {
        "etcd": {
            "version": v["ETCD_VERSION"],
            "packages": ["."],
            "binaries": ["etcd"],
            "ldflags": ["-s", "-w"],
        },
        "kubernetes": {
            "version": kv,
            "packages": [
                "k8s.io/kubernetes/cmd/kube-apiserver",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "k8s.io/kubernetes/cmd/kubectl",
            ],
            "binaries": ["kube-apiserver", "kube-controller-manager", "kubectl"],
            "ldflags": kld,
        },
        "helm": {
            "version": hv,
            "packages": ["helm.sh/helm/v3/cmd/helm"],
            "binaries": ["helm"],
            "ldflags": helm_ld,
        },
        # `up --node` only: the node programs, same pinned Kubernetes.
        "node": {
            "version": kv,
            "packages": [
                "k8s.io/kubernetes/cmd/kubelet",
                "k8s.io/kubernetes/cmd/kube-proxy",
                "k8s.io/kubernetes/cmd/kube-scheduler",
            ],
            "binaries": ["kubelet", "kube-proxy", "kube-scheduler"],
            "ldflags": kld,
            "node": True,
        },
        "coredns": {
            "version": v.get("COREDNS_VERSION", ""),
            "packages": ["."],
            "binaries": ["coredns"],
            "ldflags": ["-s", "-w"],
            "node": True,
        },
        "pause": {
            "version": "1",
            "packages": ["."],
            "binaries": ["pause"],
            "ldflags": ["-s", "-w"],
            "node": True,
        },
    }


def _module_key(name: str, target: dict, recipe: str) -> str:
    h = hashlib.sha256()
    for f in ("go.mod", "go.sum"):
        if (SRC_DIR / name / f).exists():
            h.update((SRC_DIR / name / f).read_bytes())
    if target.get("node"):  # their own Go sources (pause, coredns, tools.go) count too
        for f in sorted((SRC_DIR / name).glob("*.go")):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(" ".join(target["ldflags"]).encode())
    h.update(recipe.encode())
    return f"{name}-{target['version']}-{h.hexdigest()[:10]}"


def binary_dirs(node: bool = False) -> dict[str, Path]:
    """binary name -> cache dir holding it (whether or not it is built yet)."""
    v = read_versions()
    out = {}
    for name, t in _targets(v).items():
        if t.get("node") and not node:
            continue
        d = cache_root() / _module_key(name, t, v.get("BUILD_RECIPE", "")) / "bin"
        for b in t["binaries"]:
            out[b] = d
    return out


def binary_paths(node: bool = False) -> dict[str, Path]:
    return {b: d / b for b, d in binary_dirs(node).items()}


def check_modules(v: dict[str, str]) -> None:
    """The wrapper go.mod files must pin what versions.env says."""
    want = {
        "kubernetes": f"k8s.io/kubernetes {v['KUBERNETES_VERSION']}",
        "etcd": f"go.etcd.io/etcd/server/v3 {v['ETCD_VERSION']}",
        "helm": f"helm.sh/helm/v3 {v['HELM_VERSION']}",
        "node": f"k8s.io/kubernetes {v['KUBERNETES_VERSION']}",
        "coredns": f"github.com/coredns/coredns {v.get('COREDNS_VERSION')}",
    }
    for name, req in want.items():
        text = (SRC_DIR / name / "go.mod").read_text()
        if f"require {req}\n" not in text and f"\t{req}\n" not in text:
            raise CPError(
                f"hack/control-plane-src/{name}/go.mod does not require {req} "
                "(hack/versions.env changed?): run `hack/control-plane gen-modules` and commit"
            )
    sv = staging_version(v["KUBERNETES_VERSION"])
    for name in ("kubernetes", "node", "coredns"):
        text = (SRC_DIR / name / "go.mod").read_text()
        for line in text.splitlines():
            if "=> k8s.io/" in line and not line.rstrip().endswith(sv):
                raise CPError(f"{name}/go.mod replace not at {sv}: {line.strip()}; run gen-modules")


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod",
        CGO_ENABLED="0",
        GOMAXPROCS=env.get("GOMAXPROCS", "2"),
        GOWORK="off",
    )
    return env


def _fmt_dur(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _run_go_build(name: str, target: dict, outdir: Path, logfile: Path) -> None:
    go = go_binary()
    env = go_env()
    cwd = SRC_DIR / name
    parallel = os.environ.get("KUBEWRIT_BUILD_PARALLEL", "2")
    # Count the packages to show progress against (cheap; also downloads modules).
    log(f"{name} {target['version']}: resolving modules (go list) ...")
    t0 = time.monotonic()
    lst = subprocess.run(
        [
            go,
            "list",
            "-deps",
            "-f",
            "{{if not .Standard}}{{.ImportPath}}{{end}}",
            *target["packages"],
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if lst.returncode != 0:
        raise CPError(f"go list failed for {name}:\n{lst.stderr[-4000:]}")
    total = len([x for x in lst.stdout.splitlines() if x.strip()])
    log(
        f"{name}: {total} non-std packages, modules ready after "
        f"{_fmt_dur(time.monotonic() - t0)}; compiling"
    )
    cmd = [
        "nice",
        "-n",
        "10",
        go,
        "build",
        "-v",
        "-p",
        parallel,
        "-trimpath",
        "-ldflags=" + " ".join(target["ldflags"]),
    ]
    if len(target["packages"]) == 1:
        cmd += ["-o", str(outdir / target["binaries"][0])]
    else:
        cmd += ["-o", str(outdir) + "/"]
    cmd += target["packages"]
    with open(logfile, "w") as lf:
        lf.write("$ " + " ".join(cmd) + "\n")
        lf.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=lf, stderr=subprocess.PIPE, text=True)
        count = 0
        last = ""
        lock = threading.Lock()

        def reader() -> None:
            nonlocal count, last
            assert proc.stderr is not None
            for line in proc.stderr:
                lf.write(line)
                lf.flush()
                with lock:
                    if line and not line.startswith((" ", "\t", "#", "go: ")):
                        count += 1
                        last = line.strip()

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        next_report = time.monotonic() + 15
        while proc.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_report:
                with lock:
                    log(
                        f"{name}: compiled {count} packages "
                        f"(of <= {total + len(target['packages'])}), "
                        f"{_fmt_dur(time.monotonic() - t0)} elapsed; last: {last}"
                    )
                next_report = time.monotonic() + 30
        th.join()
    if proc.returncode != 0:
        tail = logfile.read_text()[-6000:]
        raise CPError(
            f"building {name} failed (exit {proc.returncode}); full log {logfile}:\n{tail}"
        )
    log(f"{name}: built in {_fmt_dur(time.monotonic() - t0)}")


def ensure_built(quiet: bool = False, node: bool = False) -> dict[str, Path]:
    """Build missing binaries into the cache (the node's too with `node`); return name -> path."""
    v = read_versions()
    check_modules(v)
    targets = {n: t for n, t in _targets(v).items() if node or not t.get("node")}
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, t in targets.items():
        key = _module_key(name, t, v.get("BUILD_RECIPE", ""))
        final = root / key
        ok = (
            all((final / "bin" / b).is_file() for b in t["binaries"])
            and (final / "complete").exists()
        )
        if not ok:
            # One builder per cache entry across clones and processes.
            with open(root / f".{key}.lock", "w") as lockf:
                fcntl.flock(lockf, fcntl.LOCK_EX)
                ok = (
                    all((final / "bin" / b).is_file() for b in t["binaries"])
                    and (final / "complete").exists()
                )
                if not ok:
                    log(
                        f"building {name} {t['version']} into {final} "
                        "(cold build: several minutes for kubernetes)"
                    )
                    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
                    try:
                        (tmp / "bin").mkdir()
                        _run_go_build(name, t, tmp / "bin", tmp / "build.log")
                        (tmp / "complete").write_text(
                            time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime())
                        )
                        if final.exists():
                            shutil.rmtree(final)
                        os.rename(tmp, final)
                    finally:
                        if tmp.exists():
                            shutil.rmtree(tmp, ignore_errors=True)
        elif not quiet:
            log(f"{name} {t['version']}: cached in {final}")
        for b in t["binaries"]:
            paths[b] = final / "bin" / b
    return paths


def gen_modules() -> None:
    """Rewrite the wrapper modules from versions.env, then `go mod tidy` them."""
    v = read_versions()
    go = go_binary()
    env = go_env()
    header = (
        "// Code generated by hack/control-plane gen-modules from hack/versions.env. DO NOT EDIT.\n"
    )
    kv, sv = v["KUBERNETES_VERSION"], staging_version(v["KUBERNETES_VERSION"])
    # The staging modules k8s.io/kubernetes requires at v0.0.0 (and replaces
    # with ./staging/... in its own go.mod, which does not apply to us).
    dl = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{kv}"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if dl.returncode != 0:
        raise CPError(f"go mod download k8s.io/kubernetes@{kv} failed:\n{dl.stdout}{dl.stderr}")
    kmod = Path(json.loads(dl.stdout)["GoMod"]).read_text()
    staging = []
    for line in kmod.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "=>" and parts[2].startswith("./staging/"):
            staging.append(parts[0])
    required = {ln.split()[0] for ln in kmod.splitlines() if ln.strip().endswith(" v0.0.0")}
    staging = [m for m in staging if m in required]
    if not staging:
        raise CPError(f"found no staging replace directives in k8s.io/kubernetes@{kv}'s go.mod")
    k8s = (
        f"require k8s.io/kubernetes {kv}\n\nreplace (\n"
        + "".join(f"\t{m} => {m} {sv}\n" for m in staging)
        + ")\n"
    )
    mods = {
        "kubernetes": k8s,
        "node": k8s,
        "etcd": f"require go.etcd.io/etcd/server/v3 {v['ETCD_VERSION']}\n",
        "helm": f"require helm.sh/helm/v3 {v['HELM_VERSION']}\n",
        # The client libraries at the control plane's version: compiled once for both.
        "coredns": f"require github.com/coredns/coredns {v['COREDNS_VERSION']}\n\n"
        "// The Kubernetes client libraries at the control plane's version: "
        "they compile once for both.\nreplace (\n"
        + "".join(
            f"\t{m} => {m} {sv}\n"
            for m in ("k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go")
        )
        + ")\n",
    }
    for name, body in mods.items():
        d = SRC_DIR / name
        (d / "go.mod").write_text(
            f"{header}module kubewrit.local/hack/control-plane-src/{name}\n\ngo 1.23.0\n\n{body}"
        )
        (d / "go.sum").unlink(missing_ok=True)
        log(f"go mod tidy in {d}")
        r = subprocess.run([go, "mod", "tidy"], cwd=d, env=env)
        if r.returncode != 0:
            raise CPError(f"go mod tidy failed in {d}")
    log("done; review and commit hack/control-plane-src/*/go.mod go.sum")


# --------------------------------------------------------------------------- certificates


def _openssl(*args: str, cwd: Path) -> None:
    try:
        r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CPError(
            "openssl not found (it makes the certificates): run hack/ci-setup-kube.sh "
            "or apt-get install openssl"
        ) from None
    if r.returncode != 0:
        raise CPError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def _ec_key(path: Path) -> None:
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        str(path),
        cwd=path.parent,
    )
    path.chmod(0o600)


def _sign(pki: Path, name: str, subject: str, ext: str) -> None:
    _ec_key(pki / f"{name}.key")
    (pki / f"{name}.ext").write_text(ext)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=pki,
    )
    (pki / f"{name}.csr").unlink()
    (pki / f"{name}.ext").unlink()


def ensure_pki(pki: Path, node_ip: str | None = None) -> None:
    """CA, apiserver serving cert, client certs, service-account key (EC P-256; fast).
    With a node, the API server's certificate also names the node's address (pods
    reach it there) and the node gets its certificates (hack/node.py)."""
    marker = f"ok {node_ip}\n" if node_ip else "ok\n"
    if (pki / "complete").exists() and (pki / "complete").read_text() == marker:
        if node_ip:
            _node().ensure_node_pki(pki, node_ip)
        return
    if pki.exists():
        shutil.rmtree(pki)
    pki.mkdir(parents=True)
    _ec_key(pki / "ca.key")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=kubewrit-dev-ca",
        "-days",
        "3650",
        "-sha256",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out",
        "ca.crt",
        cwd=pki,
    )
    _sign(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,"
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1"
        + (f",IP:{node_ip}" if node_ip else "")
        + ",DNS:kubernetes.default.svc.cluster.local\n",
    )
    client_ext = (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    idents = {name: u for name, u in USERS.items()}
    idents["kube-controller-manager"] = {"cn": "system:kube-controller-manager", "groups": []}
    for name, u in idents.items():
        subj = "/" + "/".join([f"O={g}" for g in u["groups"]] + [f"CN={u['cn']}"])
        _sign(pki, f"user-{name}", subj, client_ext)
    _ec_key(pki / "sa.key")
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    if node_ip:
        _node().ensure_node_pki(pki, node_ip)
    (pki / "complete").write_text(marker)


def _node():  # type: ignore[no-untyped-def]
    """hack/node.py (the real node), imported when needed."""
    if str(HACK_DIR) not in sys.path:
        sys.path.insert(0, str(HACK_DIR))
    import node

    return node


def _b64file(p: Path) -> str:
    return base64.b64encode(p.read_bytes()).decode()


def write_kubeconfigs(sd: Path, server: str) -> None:
    pki = sd / "pki"
    cluster = {
        "name": "kubewrit-dev",
        "cluster": {"server": server, "certificate-authority-data": _b64file(pki / "ca.crt")},
    }

    def user(name: str) -> dict:
        return {
            "name": name,
            "user": {
                "client-certificate-data": _b64file(pki / f"user-{name}.crt"),
                "client-key-data": _b64file(pki / f"user-{name}.key"),
            },
        }

    def ctx(name: str) -> dict:
        return {
            "name": name,
            "context": {"cluster": "kubewrit-dev", "user": name, "namespace": "default"},
        }

    def cfg(names: list[str], current: str) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [user(n) for n in names],
            "contexts": [ctx(n) for n in names],
            "current-context": current,
            "preferences": {},
        }

    def write(path: Path, data: dict) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.chmod(0o600)
        os.replace(tmp, path)

    write(sd / "kubeconfig", cfg(list(USERS), "admin"))
    for n in USERS:
        write(sd / f"kubeconfig.{n}", cfg([n], n))
    write(
        sd / "kubeconfig.kube-controller-manager",
        cfg(["kube-controller-manager"], "kube-controller-manager"),
    )


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int, start: str | None) -> bool:
    st = _proc_start_time(pid)
    if st is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    except OSError:
        return False
    return start is None or st == start


def load_state(sd: Path) -> dict:
    try:
        return json.loads((sd / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def save_state(sd: Path, st: dict) -> None:
    tmp = sd / "state.json.tmp"
    tmp.write_text(json.dumps(st, indent=2) + "\n")
    os.replace(tmp, sd / "state.json")


def _record_pid(sd: Path, name: str, pid: int) -> None:
    st = load_state(sd)
    st.setdefault("processes", {})[name] = {"pid": pid, "start": _proc_start_time(pid)}
    save_state(sd, st)


def _spawn(sd: Path, name: str, argv: list[str]) -> subprocess.Popen:
    with open(sd / "logs" / f"{name}.log", "ab") as logf:
        logf.write(f"\n==== {time.strftime('%H:%M:%S')} $ {' '.join(argv)}\n".encode())
        logf.flush()
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=sd,
        )
    _record_pid(sd, name, p.pid)
    return p


def log_tail(sd: Path, name: str, lines: int = 30) -> str:
    p = sd / "logs" / f"{name}.log"
    try:
        data = p.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log {p})"
    return f"--- last {lines} lines of {p} ---\n" + "\n".join(data[-lines:])


def _stop_pid(pid: int, start: str | None, grace: float = 10.0) -> None:
    if not _pid_alive(pid, start):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid, start):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not _pid_alive(pid, start):
            return
        time.sleep(0.1)


def stop_all(sd: Path, quiet: bool = False) -> None:
    st = load_state(sd)
    if st.get("node") or (sd / "node").exists():
        _node().stop(sd, quiet=quiet)
        st = load_state(sd)
    procs = st.get("processes", {})
    # Reverse start order: controller-manager, apiserver, etcd; the watchdog last
    # (unless we are the watchdog).
    order = ["kube-controller-manager", "kube-apiserver", "etcd", "watchdog"]
    for name in sorted(procs, key=lambda n: order.index(n) if n in order else -1):
        info = procs[name]
        if name == "watchdog" and info["pid"] == os.getpid():
            continue
        if _pid_alive(info["pid"], info.get("start")):
            if not quiet:
                log(f"stopping {name} (pid {info['pid']})")
            _stop_pid(info["pid"], info.get("start"))
    st["processes"] = {}
    st["running"] = False
    st.pop("node", None)
    if (sd / "state.json").exists():
        save_state(sd, st)
    shutil.rmtree(sd / "etcd-data", ignore_errors=True)


# --------------------------------------------------------------------------- readiness


def _https_get(url: str, pki: Path, timeout: float = 2.0, verify: bool = True) -> tuple[int, str]:
    if verify:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "user-admin.crt"), str(pki / "user-admin.key"))
    else:
        ctx = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _wait(sd: Path, name: str, proc: subprocess.Popen, check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_tail(sd, name)
            hint = ""
            if "address already in use" in tail:
                hint = " (port taken)"
            raise CPError(f"{name} exited with code {proc.returncode} before {what}{hint}\n{tail}")
        try:
            ok, last = check()
            if ok:
                return
        except (OSError, ValueError, ssl.SSLError) as e:
            last = str(e)
        time.sleep(0.2)
    raise CPError(
        f"{name} not {what} after {timeout:.0f}s (last probe: {last[:500]})\n{log_tail(sd, name)}"
    )


# --------------------------------------------------------------------------- up / down


def is_running(sd: Path) -> bool:
    st = load_state(sd)
    procs = st.get("processes", {})
    if not st.get("running"):
        return False
    names = COMPONENTS + (_node().COMPONENTS if st.get("node") else ())
    return all(n in procs and _pid_alive(procs[n]["pid"], procs[n].get("start")) for n in names)


def _ensure_state_dir(sd: Path) -> None:
    sd.mkdir(parents=True, exist_ok=True)
    gi = sd / ".gitignore"
    if not gi.exists():
        gi.write_text("# hack/control-plane state: never commit\n*\n")
    (sd / "logs").mkdir(exist_ok=True)


@contextlib.contextmanager
def _state_lock(sd: Path):
    _ensure_state_dir(sd)
    with open(sd / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def up(
    owner_pid: int | None = None,
    timeout: float = 120.0,
    node: bool = False,
    profiling: bool = False,
) -> dict:
    t0 = time.monotonic()
    sd = state_dir()
    with _state_lock(sd):
        if is_running(sd):
            st = load_state(sd)
            if node and not st.get("node"):
                raise CPError(
                    f"a control plane without a node runs from {sd}: `hack/control-plane down` "
                    "first, or use another KUBEWRIT_CONTROL_PLANE_DIR for the one with a node"
                )
            if profiling and not st.get("profiling"):
                raise CPError(
                    f"the control plane running from {sd} serves no profiles: "
                    "`hack/control-plane down` first"
                )
            if st.get("owners") is not None:
                if owner_pid:
                    # Another session shares it: it stops when the last owner is gone.
                    me = {"pid": owner_pid, "start": _proc_start_time(owner_pid)}
                    st["owners"] = [*_live_owners(st), me]
                else:
                    st["owners"] = None  # started by hand now: keep it running
                save_state(sd, st)
            log(
                f"already running at {st['server']} (state {sd}); `hack/control-plane down` to stop"
            )
            return st
        stop_all(sd, quiet=True)  # leftovers of a crashed run
        ip = None
        if node:
            _node().ensure_packages()
            ip = _node().node_ip()
            _node().claim(sd)
        bins = ensure_built(quiet=True, node=node)
        t_built = time.monotonic()
        ensure_pki(sd / "pki", ip)
        last_err: CPError | None = None
        for attempt in range(3):
            try:
                st = _start(sd, bins, owner_pid, timeout, ip, profiling)
                break
            except CPError as e:
                stop_all(sd, quiet=True)
                last_err = e
                # Lost a race for a free port: try again with new ports.
                if "port taken" in str(e) and attempt < 2:
                    log("a port was taken by someone else meanwhile; retrying with new ports")
                    continue
                raise
        else:  # pragma: no cover
            raise last_err  # type: ignore[misc]
        elapsed = time.monotonic() - t0
        st["elapsed_seconds"] = round(elapsed, 1)
        save_state(sd, st)
        log(
            f"control plane up at {st['server']} in {elapsed:.1f}s "
            f"(binaries {t_built - t0:.1f}s, start {time.monotonic() - t_built:.1f}s)"
        )
        return st


def _start(
    sd: Path,
    bins: dict[str, Path],
    owner_pid: int | None,
    timeout: float,
    node_ip: str | None,
    profiling: bool = False,
) -> dict:
    pki = sd / "pki"
    etcd_port, peer_port, api_port, kcm_port = (free_port() for _ in range(4))
    while len({etcd_port, peer_port, api_port, kcm_port}) < 4:
        etcd_port, peer_port, api_port, kcm_port = (free_port() for _ in range(4))
    server = f"https://127.0.0.1:{api_port}"
    st = {
        "running": False,
        "server": server,
        "state_dir": str(sd),
        "ports": {
            "etcd": etcd_port,
            "etcd-peer": peer_port,
            "kube-apiserver": api_port,
            "kube-controller-manager": kcm_port,
        },
        "bin": {k: str(v) for k, v in bins.items()},
        "processes": {},
        # None: started by hand, runs until `down`. A list: the processes
        # (test sessions) using it; it stops when the last one is gone.
        "owners": [{"pid": owner_pid, "start": _proc_start_time(owner_pid)}] if owner_pid else None,
        "versions": read_versions(),
        "profiling": profiling,
        "started_at": time.time(),
    }
    save_state(sd, st)
    shutil.rmtree(sd / "etcd-data", ignore_errors=True)
    for f in (sd / "logs").glob("*.log"):
        f.unlink()

    if owner_pid:
        _spawn(
            sd, "watchdog", [sys.executable, str(Path(__file__).resolve()), "_watchdog", str(sd)]
        )

    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd = _spawn(
        sd,
        "etcd",
        [
            str(bins["etcd"]),
            "--name=kubewrit",
            f"--data-dir={sd / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kubewrit={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            "--quota-backend-bytes=2147483648",
        ],
    )

    def etcd_ok():
        code, body = _http_get(etcd_url + "/health")
        return code == 200 and '"health":"true"' in body.replace(" ", ""), body

    _wait(sd, "etcd", etcd, etcd_ok, 30, "healthy")

    api = _spawn(
        sd,
        "kube-apiserver",
        [
            str(bins["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={api_port}",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--cert-dir={sd / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=true",
            # Bootstrap tokens give tests a bearer token that is not a ServiceAccount's.
            "--enable-bootstrap-token-auth=true",
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,"
            "DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
            "ValidatingAdmissionPolicy,ResourceQuota,NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            f"--profiling={str(profiling).lower()}",
            "--v=1",
            *(_node().apiserver_args(pki, node_ip) if node_ip else []),
        ],
    )

    def api_ok():
        code, body = _https_get(server + "/readyz", pki)
        return code == 200 and body.strip() == "ok", f"{code} {body}"

    _wait(sd, "kube-apiserver", api, api_ok, timeout, "ready")
    write_kubeconfigs(sd, server)

    kcm = _spawn(
        sd,
        "kube-controller-manager",
        [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={sd / 'kubeconfig.kube-controller-manager'}",
            f"--authentication-kubeconfig={sd / 'kubeconfig.kube-controller-manager'}",
            f"--authorization-kubeconfig={sd / 'kubeconfig.kube-controller-manager'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={sd / 'kcm-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--controllers=*",
            "--profiling=false",
            "--v=1",
        ],
    )

    def kcm_ok():
        code, body = _https_get(f"https://127.0.0.1:{kcm_port}/healthz", pki, verify=False)
        return code == 200 and body.strip() == "ok", f"{code} {body}"

    _wait(sd, "kube-controller-manager", kcm, kcm_ok, 60, "healthy")

    # The serviceaccount controller creating default/default shows the
    # controllers really run (and pods/tokens in "default" work right away).
    def sa_ok():
        code, body = _https_get(server + "/api/v1/namespaces/default/serviceaccounts/default", pki)
        return code == 200, f"{code} {body[:200]}"

    _wait(sd, "kube-controller-manager", kcm, sa_ok, 60, "creating ServiceAccount default/default")
    if node_ip:
        _node().start(sd, load_state(sd), bins, node_ip)
    st = load_state(sd)
    st["running"] = True
    save_state(sd, st)
    return st


def _live_owners(st: dict) -> list[dict]:
    return [o for o in (st.get("owners") or []) if _pid_alive(o["pid"], o.get("start"))]


def release(sd: Path, owner_pid: int) -> None:
    """Drop one owner; stop the control plane if it was the last one."""
    with _state_lock(sd):
        st = load_state(sd)
        if not st or st.get("owners") is None:
            return
        st["owners"] = [o for o in _live_owners(st) if o["pid"] != owner_pid]
        if st["owners"]:
            save_state(sd, st)
            pids = ", ".join(str(o["pid"]) for o in st["owners"])
            log(f"still used by pid(s) {pids}; left running")
        else:
            stop_all(sd)


def watchdog(sd: Path) -> None:
    """Stop the control plane when the last process that owns it goes away
    (a test session killed before its teardown)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(1)
        st = load_state(sd)
        if (
            st.get("processes", {}).get("watchdog", {}).get("pid") != os.getpid()
            or st.get("owners") is None
        ):
            return  # superseded, stopped, or taken over by hand
        if _live_owners(st):
            continue
        with _state_lock(sd):
            st = load_state(sd)
            if (
                st.get("processes", {}).get("watchdog", {}).get("pid") == os.getpid()
                and st.get("owners") is not None
                and not _live_owners(st)
            ):
                stop_all(sd)
                return


# --------------------------------------------------------------------------- commands


def env_lines(sd: Path) -> list[str]:
    st = load_state(sd)
    bins = sorted({str(Path(p).parent) for p in st.get("bin", {}).values()}) or sorted(
        {str(p) for p in binary_dirs().values()}
    )
    return [
        f"export KUBECONFIG={sd / 'kubeconfig'}",
        f"export KUBEWRIT_CONTROL_PLANE_DIR={sd}",
        f"export KUBEWRIT_KUBE_SERVER={st.get('server', '')}",
        f"export PATH={':'.join(bins)}:$PATH",
    ]


def status(sd: Path) -> int:
    st = load_state(sd)
    if not st:
        print(f"not running (no state in {sd})")
        return 1
    running = is_running(sd)
    print(f"control plane: {'running' if running else 'NOT running'} (state {sd})")
    if st.get("server"):
        print(f"  server:     {st['server']}")
        print(f"  kubeconfig: {sd / 'kubeconfig'} (contexts: {', '.join(USERS)})")
    for name, info in st.get("processes", {}).items():
        alive = _pid_alive(info["pid"], info.get("start"))
        port = st.get("ports", {}).get(name, "")
        print(
            f"  {name:24s} pid {info['pid']:<8} {'up' if alive else 'DEAD'}"
            f"{f'  port {port}' if port else ''}"
        )
    v = st.get("versions", {})
    if v:
        print(
            f"  versions: kubernetes {v.get('KUBERNETES_VERSION')}, etcd {v.get('ETCD_VERSION')}, "
            f"helm {v.get('HELM_VERSION')}"
        )
    return 0 if running else 1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="hack/control-plane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_build = sub.add_parser("build", help="build or locate cached binaries; print their paths")
    p_build.add_argument("--node", action="store_true", help="the node's binaries too")
    p_up = sub.add_parser("up", help="start the control plane")
    p_up.add_argument(
        "--owner-pid",
        type=int,
        help="a test session using it: it stops when every such owner has exited "
        "or called `release` (a running one is shared); without it, it runs until `down`",
    )
    p_up.add_argument(
        "--timeout", type=float, default=120.0, help="apiserver readiness timeout (s)"
    )
    p_up.add_argument(
        "--node",
        action="store_true",
        help="also run a real node (containerd, kubelet, kube-proxy, kube-scheduler, CoreDNS)",
    )
    p_up.add_argument(
        "--profiling",
        action="store_true",
        help="kube-apiserver serves /debug/pprof (to admin): "
        "kubectl get --raw '/debug/pprof/profile?seconds=10' > cpu.pprof",
    )
    p_load = sub.add_parser("load", help="import an OCI image archive into the node's containerd")
    p_load.add_argument("archive", type=Path)
    sub.add_parser("down", help="stop it")
    p_rel = sub.add_parser(
        "release", help="drop an owner (see up --owner-pid); stop when none is left"
    )
    p_rel.add_argument("--owner-pid", type=int, required=True)
    sub.add_parser("env", help="print shell exports")
    sub.add_parser("status", help="print what runs")
    p_logs = sub.add_parser("logs", help="print the tail of component logs")
    p_logs.add_argument("name", nargs="?", choices=COMPONENTS + _node().COMPONENTS)
    p_logs.add_argument("-n", type=int, default=50)
    sub.add_parser("gen-modules", help="regenerate wrapper go.mod/go.sum from versions.env")
    if argv[:1] == ["_watchdog"]:  # internal: spawned by `up --owner-pid`
        watchdog(Path(argv[1]))
        return 0
    a = ap.parse_args(argv)
    sd = state_dir()
    try:
        if a.cmd == "build":
            t0 = time.monotonic()
            for name, p in ensure_built(node=a.node).items():
                print(f"{name}\t{p}")
            log(f"binaries ready in {time.monotonic() - t0:.1f}s")
        elif a.cmd == "up":
            st = up(owner_pid=a.owner_pid, timeout=a.timeout, node=a.node, profiling=a.profiling)
            print(f"server:     {st['server']}")
            if st.get("node"):
                print(f"node:       {st['node']['name']} ({st['node']['ip']}), Ready; CoreDNS up")
            print(f"kubeconfig: {sd / 'kubeconfig'}  (contexts: {', '.join(USERS)})")
            print('use it:     eval "$(hack/control-plane env)"; kubectl get ns')
        elif a.cmd == "down":
            with _state_lock(sd):
                stop_all(sd)
            log("stopped")
        elif a.cmd == "release":
            release(sd, a.owner_pid)
        elif a.cmd == "load":
            if not load_state(sd).get("node"):
                raise CPError(f"no node runs from {sd}: `hack/control-plane up --node` first")
            print(_node().load_image(sd, a.archive.resolve()))
        elif a.cmd == "env":
            if not load_state(sd):
                raise CPError(f"not running (no state in {sd}); run `hack/control-plane up` first")
            print("\n".join(env_lines(sd)))
        elif a.cmd == "status":
            return status(sd)
        elif a.cmd == "logs":
            extra = _node().COMPONENTS if load_state(sd).get("node") else ()
            for n in [a.name] if a.name else COMPONENTS + extra:
                print(log_tail(sd, n, a.n))
        elif a.cmd == "gen-modules":
            gen_modules()
    except CPError as e:
        print(f"[control-plane] ERROR: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
