# Multi-stage: build wheels with the compilers in one stage, run from a slim image in the other.
# The generated protobuf code is committed, so no protoc runs here.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip wheel
COPY pyproject.toml README.md ./
COPY service ./service
# The service, its runtime dependencies and the [otel] extra (traces, off unless OTEL_* settings
# ask for them): not the [embedded] extra (the development Postgres) and not [dev].
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[otel]'

FROM python:3.11-slim AS runtime
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# A numeric user and group that exist nowhere else (not root, and no name to look up), so that
# Kubernetes' runAsNonRoot can verify it. The server writes nothing locally in production; the
# directory is only for development mode (SECRETS_ENV=development with mounted files).
RUN mkdir -p /var/lib/secrets && chown 10001:10001 /var/lib/secrets
USER 10001:10001
WORKDIR /var/lib/secrets
# Production by default: the server refuses to start (one line, exit 2) until it is given
# SECRETS_DATABASE_URL, SECRETS_KEYRING_FILE and SECRETS_PRINCIPALS_FILE. The image has no
# embedded Postgres, and never generates keys for a shared database.
ENV SECRETS_ENV=production \
    SECRETS_LISTEN=0.0.0.0:50051 \
    SECRETS_DATA_DIR=/var/lib/secrets/data \
    PYTHONUNBUFFERED=1
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "service"]
