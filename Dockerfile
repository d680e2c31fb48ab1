# Hapax gateway image: gRPC on 50051, Prometheus metrics on 9090.
#   docker build -t hapax .
#   docker run -p 50051:50051 -p 9090:9090 -e OPENAI_API_KEY hapax
#   docker run -v $PWD/hapax.yaml:/etc/hapax/hapax.yaml -e HAPAX_CONFIG=/etc/hapax/hapax.yaml hapax

# --- builder: install the project and its pinned dependencies into a virtualenv ----------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/hapax

WORKDIR /src
# README.md* : the readme is optional for the build, and a wildcard may match nothing.
COPY pyproject.toml README.md* ./
COPY server/ server/
COPY clients/ clients/
RUN /opt/hapax/bin/pip install . \
 && /opt/hapax/bin/hapaxd --help >/dev/null

# --- runtime: the virtualenv only, run as an unprivileged user ---------------------------------
FROM python:3.11-slim

RUN groupadd --system --gid 10001 hapax \
 && useradd --system --uid 10001 --gid hapax --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin hapax \
 && mkdir -p /var/lib/hapax && chown 10001:10001 /var/lib/hapax

COPY --from=builder /opt/hapax /opt/hapax

# The usage ledger (usage.db and its spool) lives in HAPAX_STATE_DIR: mount a volume there to
# keep it across containers.
ENV PATH=/opt/hapax/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HAPAX_STATE_DIR=/var/lib/hapax
VOLUME /var/lib/hapax

USER 10001:10001

EXPOSE 50051 9090

HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["hapaxd", "healthcheck", "127.0.0.1:50051"]

ENTRYPOINT ["hapaxd"]
CMD ["serve"]
