# syntax=docker/dockerfile:1
# The failsight agent image. Build from the repository root:
#   docker build -t failsight:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
# It expects its config at /etc/failsight/config.yaml (a ConfigMap in Kubernetes) and runs with a
# read-only root filesystem: the only writable path it needs is /tmp (an emptyDir).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Every dependency ships manylinux wheels (asyncpg, cryptography, grpcio, uvloop), so the builder
# needs no compiler; the venv is copied whole into the final stage, at the same path.
RUN python -m venv /opt/failsight
COPY pyproject.toml README.md LICENSE ./
COPY agent ./agent
COPY probes ./probes
COPY failsight ./failsight
# Bytecode is compiled here, at install time: the final image cannot write .pyc files.
RUN /opt/failsight/bin/pip install --no-cache-dir ".[fast]" \
    && /opt/failsight/bin/failsight version

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="failsight" \
      org.opencontainers.image.description="Synthetic business journeys, replication lag and failover verdicts for multi-cloud platforms" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# HOME and TMPDIR point at /tmp, the one writable mount, so nothing (Python, OpenSSL, asyncpg's
# .pgpass lookup) tries to write under a read-only root.
ENV PATH=/opt/failsight/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 failsight \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin failsight
COPY --from=builder /opt/failsight /opt/failsight
WORKDIR /tmp
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9747
STOPSIGNAL SIGTERM
# The slim image has no curl; the venv's Python does the request. Assumes agent.listen uses
# port 9747 on 0.0.0.0 or 127.0.0.1 (the Kubernetes probes are the ones that matter there).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9747/healthz', timeout=4)"]
ENTRYPOINT ["failsight"]
CMD ["run", "--config", "/etc/failsight/config.yaml"]
