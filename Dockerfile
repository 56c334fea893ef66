FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker worker
COPY producers producers
COPY sandbox sandbox
COPY examples examples
RUN pip install --no-cache-dir .
USER nobody
