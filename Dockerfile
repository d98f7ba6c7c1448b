# otelstats serve in a container: docker-compose.yml builds this next to Prometheus and Grafana.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY otelstats ./otelstats
RUN pip install . && rm -rf /src

# Never run as root; the database lives on a volume the user owns.
RUN useradd --create-home --uid 10001 otelstats && mkdir /data && chown otelstats /data
USER otelstats
WORKDIR /home/otelstats
VOLUME ["/data"]
ENV OTELSTATS_DB=/data/stats.db \
    OTELSTATS_PORT=8321
EXPOSE 8321

# /healthz needs no token; the slim image has no curl, so Python asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OTELSTATS_PORT', '8321'), timeout=4)"]

# Beyond loopback serve requires OTELSTATS_TOKEN (docker-compose.yml passes it from a secret).
CMD ["otelstats", "serve", "--host", "0.0.0.0"]
