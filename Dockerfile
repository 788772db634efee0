# Multi-stage: build wheels with the compilers in one stage, run from a slim image as a non-root
# user in the other. The generated protobuf code is committed, so no protoc runs here.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip wheel
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
RUN groupadd --system secrets && useradd --system --gid secrets --home-dir /var/lib/secrets --create-home secrets
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER secrets
WORKDIR /var/lib/secrets
# Production needs SECRETS_DATABASE_URL, SECRETS_KEYRING_FILE and SECRETS_PRINCIPALS_FILE; without
# SECRETS_ENV=production the image runs in development mode with the embedded Postgres.
ENV SECRETS_LISTEN=0.0.0.0:50051 \
    SECRETS_DATA_DIR=/var/lib/secrets/data \
    PYTHONUNBUFFERED=1
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "service"]
