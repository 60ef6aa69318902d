#!/usr/bin/env bash
# Installs what the Kubernetes tests (pytest -m kube, tests/kube/ and tests/cluster/)
# need and builds or finds the control-plane and node binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl, helm; kubelet, kube-proxy, kube-scheduler,
# CoreDNS, pause) and kubewrit's image in the cache. Idempotent: a few seconds when
# everything is in place; a cold build prints progress (13 minutes on the 2-core
# machine for the control plane, plus the node's binaries and the image).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
t0=$(date +%s)

# openssl makes the control plane's certificates.
if ! command -v openssl >/dev/null 2>&1; then
  echo "[ci-setup-kube] installing openssl (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

# A Go toolchain (>= 1.23) builds the binaries from Go modules.
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH="$PATH:/usr/local/go/bin"
  else
    echo "[ci-setup-kube] ERROR: no Go toolchain (need >= 1.23 on PATH or in /usr/local/go)" >&2
    exit 1
  fi
fi

# Python packages the kube tests use.
if ! python3 -c 'import kubernetes, cryptography, pytest' 2>/dev/null; then
  echo "[ci-setup-kube] installing Python packages: kubernetes cryptography pytest"
  python3 -m pip install --quiet kubernetes cryptography pytest \
    || python3 -m pip install --quiet --break-system-packages kubernetes cryptography pytest
fi

# Binaries: cached under ${KUBEWRIT_CONTROL_PLANE_CACHE:-~/.cache/kubewrit/control-plane},
# the node's too (kubelet, kube-proxy, kube-scheduler, CoreDNS, pause: tests/cluster).
"$here/control-plane" build --node >/dev/null

# The node's runtime (containerd, runc, CNI plugins, conntrack) from Debian.
python3 -c "import sys; sys.path.insert(0, '$here'); import node; node.ensure_packages()"

# kubewrit's image from the Dockerfile (buildah; base made with debootstrap), cached
# under ~/.cache/kubewrit/images: tests/cluster runs it in pods.
"$here/image" build >/dev/null
echo "[ci-setup-kube] ready in $(( $(date +%s) - t0 ))s"
