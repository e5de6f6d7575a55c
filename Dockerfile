# cloudpos-syncer: a slim image that runs as a non-root user and holds no secret.
# The token is given at run time (CLOUDPOS_TOKEN, or a mounted config; see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY syncer ./syncer
COPY migrations ./migrations
# The wheel carries the package and its migrations; the sources are not needed after it.
# With the `mysql` extra, the same image serves Postgres, MariaDB and MySQL.
RUN pip install '.[mysql]' && rm -rf /app && useradd --create-home --uid 10001 syncer
USER syncer
WORKDIR /home/syncer
# /healthz and /metrics of `syncer run --http 0.0.0.0:9108`
EXPOSE 9108
ENTRYPOINT []
CMD ["syncer", "run", "--http", "0.0.0.0:9108"]
