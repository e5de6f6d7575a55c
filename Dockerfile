FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY syncer ./syncer
COPY migrations ./migrations
RUN pip install . && useradd --create-home --uid 10001 syncer
USER syncer
WORKDIR /home/syncer
# No token is baked in: pass CLOUDPOS_TOKEN (or mount a config with token_env) at run time.
ENTRYPOINT []
CMD ["syncer", "status"]
