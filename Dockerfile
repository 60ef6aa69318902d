# kubewrit: the decision webhook (`kubewrit webhook`), the standalone server
# (`kubewrit serve`) and the operator (`python -m kubewrit.operator`) in one image.
# Debian's Python 3.11 on bookworm-slim; builds with `docker build .` or, without
# a registry, with `hack/image build` (buildah, base made with debootstrap).
FROM docker.io/library/debian:bookworm-slim AS build
# pycurl is compiled against Debian's libcurl (and so Debian's OpenSSL, which Python's
# own ssl module already uses) rather than taken as a wheel bundling a second OpenSSL
# and libcurl's every optional protocol: 5 MB in the image instead of 17, and libcurl's
# security updates come from Debian.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev binutils \
        gcc libc6-dev libcurl4-openssl-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/kubewrit
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY operator ./operator
COPY kubewrit ./kubewrit
# Byte-compiled at build time (pip's default): the root filesystem is read-only at
# run time, and compiling on every start would cost seconds of readiness.
# Behind a TLS-intercepting proxy, pass its CA bundle as the optional build secret
# `pip-ca` (`--secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt`).
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/kubewrit/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-binary pycurl '.[kubernetes]' \
    && /opt/kubewrit/bin/pip uninstall -y --disable-pip-version-check pip setuptools
# Size (the image stays under 210 MB; 203 MB with libcurl): the Kubernetes client's asyncio twin goes
# (kubewrit uses the synchronous client), third-party packages ship compiled only
# (kubewrit's own code keeps its source), native extensions lose debug symbols.
RUN cd /opt/kubewrit/lib/python3.11/site-packages \
    && rm -rf kubernetes/aio kubernetes/test kubernetes/e2e_test \
    && for d in */; do \
         case "$d" in kubewrit/|*.dist-info/) continue;; esac; \
         python3 -m compileall -q -b -j 0 "$d" >/dev/null \
         && find "$d" -name '*.py' -delete \
         && find "$d" -name __pycache__ -type d -prune -exec rm -rf {} +; \
       done \
    && find . -name '*.so' -exec strip --strip-unneeded {} +

FROM docker.io/library/debian:bookworm-slim
LABEL org.opencontainers.image.title="kubewrit" \
      org.opencontainers.image.description="The execution authorization boundary for AI agents, native to Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# Left out at run time: glibc's iconv modules (Python's codecs do not use them), the
# standard library's test suite, pydoc topics and lib2to3, apt/debconf backups.
# TLS trust comes from certifi and the ServiceAccount's CA, not the system store.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libcurl4 \
    && rm -rf /var/lib/apt/lists/* /usr/lib/x86_64-linux-gnu/gconv \
        /usr/lib/python3.11/test /usr/lib/python3.11/pydoc_data /usr/lib/python3.11/lib2to3 \
        /var/cache/debconf/*-old /var/lib/dpkg/*-old \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin kubewrit \
    && mkdir -p /var/run/kubewrit /var/lib/kubewrit \
    && chown 10001:10001 /var/run/kubewrit /var/lib/kubewrit
COPY --from=build /opt/kubewrit /opt/kubewrit
ENV PATH=/opt/kubewrit/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8443 9443
ENTRYPOINT ["kubewrit"]
CMD ["--help"]
