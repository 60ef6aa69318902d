# kubewrit: the decision webhook (`kubewrit webhook`), the standalone server
# (`kubewrit serve`) and the operator (`python -m kubewrit.operator`) in one image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="kubewrit" \
      org.opencontainers.image.description="The execution authorization boundary for AI agents, native to Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin kubewrit \
    && mkdir -p /var/run/kubewrit /var/lib/kubewrit \
    && chown 10001:10001 /var/run/kubewrit /var/lib/kubewrit
USER 10001
EXPOSE 8443 9443
ENTRYPOINT ["kubewrit"]
CMD ["--help"]
