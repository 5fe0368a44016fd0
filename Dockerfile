# aggregator: `aggregator run --serve` in a slim Python image, as an unprivileged user.
#   podman build -t aggregator .      (or docker build)
#   podman run -d -p 8080:8080 -v ./config.toml:/config/config.toml:ro \
#     -v agg-db:/data/db -v agg-feeds:/data/feeds aggregator
# The config is read from /config/config.toml; give it `[database] url = "sqlite:////data/db/aggregator.sqlite3"`
# (or a PostgreSQL URL) and `[output] dir = "/data/feeds"`. See docs/deploy.md.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
# PostgreSQL and SOCKS proxies supported out of the box; the source tree is not kept.
RUN pip install --no-compile '.[postgres,socks]' && rm -rf /src

# A fixed uid, so volume permissions can be prepared on the host (chown 10001).
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin aggregator \
    && mkdir -p /config /data/db /data/feeds \
    && chown -R aggregator:aggregator /data
COPY deploy/container-config.toml /config/config.toml

VOLUME ["/config", "/data/db", "/data/feeds"]
WORKDIR /data
USER aggregator
EXPOSE 8080

# /healthz: 200 once a cycle has finished and while the database answers and no job is late.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["aggregator", "--config", "/config/config.toml"]
CMD ["run", "--serve", "--host", "0.0.0.0", "--port", "8080"]
