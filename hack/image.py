#!/usr/bin/env python3
"""Build kubewrit's container image from the repository's Dockerfile, without a registry.

Usage: hack/image COMMAND

  build   build (or find cached) the image; print its OCI archive path and name
  name    print the image name the current sources build to (no build)

The Dockerfile starts FROM docker.io/library/debian:bookworm-slim. No registry is
reachable here, so that base is made locally the way Debian's official image is:
`debootstrap --variant=minbase bookworm` from Debian's mirror, slimmed with the
same dpkg path exclusions, imported into buildah's storage under the official
name. The same Dockerfile builds unchanged with `docker build` anywhere else.

buildah (Debian package, vfs storage, chroot isolation: no daemon, no nested
containers) builds the image; it is written to an OCI archive under
~/.cache/kubewrit/images (override with KUBEWRIT_IMAGE_CACHE), named
docker.io/kubewrit/kubewrit:dev-<hash of the files the Dockerfile copies>, so
an unchanged tree is not rebuilt. `hack/control-plane load ARCHIVE` imports it
into the node's containerd.

Only the Python standard library, debootstrap and buildah are used (installed
with apt-get when missing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = HACK_DIR.parent
BASE_NAME = "docker.io/library/debian:bookworm-slim"
IMAGE_REPO = "docker.io/kubewrit/kubewrit"
DEBIAN_MIRROR = os.environ.get("KUBEWRIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the Dockerfile copies: the image is rebuilt when one of these changes.
IMAGE_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "kubewrit",
    "webhook",
    "operator",
)
# Bump when the base recipe changes (excludes, package set) to rebuild the base.
BASE_RECIPE = "1"
PIP_CA = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"

# Debian's official slim images exclude these paths from every package install
# (debuerreotype's slimify); the same file goes into the base so later
# `apt-get install` in the Dockerfile stays slim too.
DPKG_SLIM = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
"""


class ImageError(Exception):
    """A failure with a message meant for the person running the command."""


def log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    env = os.environ.get("KUBEWRIT_IMAGE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubewrit" / "images"


def _run(cmd: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        raise ImageError(
            f"{what} failed (exit {r.returncode}): {' '.join(cmd)}\n{(r.stdout + r.stderr)[-6000:]}"
        )
    return r


def ensure_tools() -> None:
    missing = [
        pkg
        for tool, pkg in (("buildah", "buildah"), ("debootstrap", "debootstrap"))
        if not shutil.which(tool)
    ]
    if missing:
        log(f"installing {' '.join(missing)} (apt)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
        _run(["apt-get", "install", "-y", "-qq", *missing], "apt-get install", env=env)


def buildah(*args: str, what: str = "buildah") -> subprocess.CompletedProcess[str]:
    return _run(["buildah", "--storage-driver", "vfs", *args], what)


def _has_image(name: str) -> bool:
    r = subprocess.run(
        ["buildah", "--storage-driver", "vfs", "inspect", "--type", "image", name],
        capture_output=True,
        text=True,
    )
    return r.returncode == 0


def base_rootfs() -> Path:
    """A slim Debian bookworm root filesystem as a tar, cached."""
    out = cache_dir() / f"debian-bookworm-slim-r{BASE_RECIPE}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log(f"making the base: debootstrap --variant=minbase bookworm from {DEBIAN_MIRROR}")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".rootfs.") as tmp:
        root = Path(tmp) / "rootfs"
        _run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
            "debootstrap",
        )
        (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(DPKG_SLIM)
        (root / "etc/apt/apt.conf.d/docker-clean").write_text(
            'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
            '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
            'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
            '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
            'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
        )
        (root / "etc/apt/apt.conf.d/docker-no-languages").write_text('Acquire::Languages "none";\n')
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(
            "Types: deb\nURIs: http://deb.debian.org/debian\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            "Types: deb\nURIs: http://deb.debian.org/debian-security\n"
            "Suites: bookworm-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        for pattern in (
            "var/cache/apt/archives/*.deb",
            "var/cache/apt/*.bin",
            "var/lib/apt/lists/*",
            "var/log/*.log",
            "var/log/apt/*",
            "usr/share/info/*",
            "usr/share/man/*",
            "usr/share/groff/*",
            "usr/share/lintian/*",
            "usr/share/linda/*",
        ):
            for p in root.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
        for p in (root / "usr/share/doc").glob("*"):
            for q in p.iterdir() if p.is_dir() else ():
                if q.name != "copyright":
                    shutil.rmtree(q) if q.is_dir() and not q.is_symlink() else q.unlink()
        for p in (root / "usr/share/locale").glob("*"):
            if p.name != "locale.alias":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        for p in ("etc/hostname", "etc/resolv.conf"):
            (root / p).unlink(missing_ok=True)
        tmp_tar = Path(tmp) / "rootfs.tar"
        with tarfile.open(tmp_tar, "w") as tar:
            for entry in sorted(root.iterdir()):
                tar.add(entry, arcname=entry.name)
        os.replace(tmp_tar, out)
    log(f"base rootfs {out} ({out.stat().st_size // 2**20} MB) in {time.monotonic() - t0:.0f}s")
    return out


def ensure_base() -> None:
    """debian:bookworm-slim in buildah's storage, from the cached rootfs."""
    if _has_image(BASE_NAME):
        return
    rootfs = base_rootfs()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubewrit-base.") as ctx:
        os.link(rootfs, Path(ctx) / "rootfs.tar") if _same_fs(rootfs, Path(ctx)) else shutil.copy(
            rootfs, Path(ctx) / "rootfs.tar"
        )
        (Path(ctx) / "Containerfile").write_text('FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n')
        buildah(
            "bud",
            "--isolation",
            "chroot",
            "--pull-never",
            "-t",
            BASE_NAME,
            ctx,
            what="importing the base",
        )
    log(f"base {BASE_NAME} imported into buildah in {time.monotonic() - t0:.0f}s")


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def source_hash() -> str:
    """Hash of every file the Dockerfile can copy (git-tracked or not, minus caches)."""
    h = hashlib.sha256()
    for name in IMAGE_INPUTS:
        p = REPO_ROOT / name
        files = [p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else []
        for f in files:
            if not f.is_file() or "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def image_name() -> str:
    return f"{IMAGE_REPO}:dev-{source_hash()}"


def archive_path(name: str) -> Path:
    return cache_dir() / (name.rsplit("/", 1)[1].replace(":", "-") + ".oci.tar")


def build() -> tuple[Path, str, dict[str, float]]:
    """Build the image unless cached; return (OCI archive, name, figures)."""
    name = image_name()
    out = archive_path(name)
    if out.exists():
        return out, name, json.loads(out.with_suffix(".json").read_text())
    ensure_tools()
    ensure_base()
    t0 = time.monotonic()
    log(f"building {name} from {REPO_ROOT / 'Dockerfile'} (buildah, vfs, chroot isolation)")
    buildah(
        "bud",
        "--isolation",
        "chroot",
        "--pull-never",
        "--layers=false",
        # The machine's CA bundle: PyPI may only be reachable through a TLS proxy.
        *(["--secret", f"id=pip-ca,src={PIP_CA}"] if Path(PIP_CA).is_file() else []),
        "-t",
        name,
        "-f",
        str(REPO_ROOT / "Dockerfile"),
        str(REPO_ROOT),
        what="building the image",
    )
    built = time.monotonic() - t0
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    buildah("push", name, f"oci-archive:{tmp}:{name}", what="writing the OCI archive")
    info = json.loads(buildah("inspect", "--type", "image", name).stdout)
    size = _image_size(name)
    figures = {
        "build_seconds": round(built, 1),
        "size_bytes": size,
        "archive_bytes": tmp.stat().st_size,
    }
    out.with_suffix(".json").write_text(json.dumps(figures) + "\n")
    os.replace(tmp, out)
    _prune(keep=out)
    log(
        f"{name}: {size / 1e6:.0f} MB uncompressed, built in {built:.0f}s "
        f"(user {info.get('OCIv1', {}).get('config', {}).get('User', '?')}); {out}"
    )
    return out, name, figures


def _image_size(name: str) -> int:
    """Uncompressed size of the image's layers (what `docker images` calls SIZE)."""
    r = buildah("images", "--json", name)
    data = json.loads(r.stdout)
    size = data[0].get("size", 0) if data else 0
    if isinstance(size, str):  # buildah 1.28 prints "353 MB" (decimal units)
        number, _, unit = size.partition(" ")
        scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(unit.strip(), 1)
        size = float(number) * scale
    return int(size)


def _prune(keep: Path) -> None:
    """Keep one archive per repository: old dev tags only cost disk."""
    for p in cache_dir().glob("kubewrit-dev-*.oci.tar"):
        if p != keep:
            p.unlink(missing_ok=True)
            p.with_suffix(".json").unlink(missing_ok=True)
    r = subprocess.run(
        ["buildah", "--storage-driver", "vfs", "images", "--format", "{{.Name}}:{{.Tag}}"],
        capture_output=True,
        text=True,
    )
    keep_tag = keep.name.removeprefix("kubewrit-").removesuffix(".oci.tar")
    for line in r.stdout.split():
        if line.startswith(IMAGE_REPO + ":dev-") and not line.endswith(keep_tag):
            subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", line], capture_output=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="hack/image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build or find the cached image; print archive and name")
    sub.add_parser("name", help="print the image name for the current sources")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "name":
            print(image_name())
        else:
            t0 = time.monotonic()
            out, name, figures = build()
            print(json.dumps({"archive": str(out), "image": name, **figures}))
            log(f"ready in {time.monotonic() - t0:.1f}s")
    except ImageError as e:
        print(f"[image] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
