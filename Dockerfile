# One image for every role: the command picks it (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROVISIONER_DATABASE_URL=sqlite:////data/provisioner.db
WORKDIR /app
COPY pyproject.toml README.md ./
COPY plausible_rules plausible_rules
COPY provisioner_types provisioner_types
COPY worker worker
COPY producers producers
COPY provision provision
COPY sandbox sandbox
RUN pip install '.[ops]' \
    && useradd --create-home --uid 10001 provisioner \
    && mkdir -p /data \
    && chown provisioner /data
USER provisioner
# The SQLite file of embedded mode lives here; with PostgreSQL nothing is written.
VOLUME ["/data"]
EXPOSE 8080
# The status database is reachable and at this version's schema (each service in
# docker-compose.yml adds a check of its own).
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["provision", "db", "check"]
CMD ["provision", "serve", "--host", "0.0.0.0", "--port", "8080"]
