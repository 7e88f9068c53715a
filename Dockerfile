# paywatch services (collect, detect, alert, compensate, simulate, ...) for docker-compose.yml.
# One image, one stage per container: `docker run paywatch collect`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PAYWATCH_CONFIG=/etc/paywatch/paywatch.yaml

WORKDIR /src
# Only what the package is built from (the work tree also holds .venv, caches and test data).
COPY pyproject.toml README.md ./
COPY paywatch/ paywatch/
COPY collectors/ collectors/
COPY detectors/ detectors/
COPY alerts/ alerts/
COPY compensation/ compensation/
COPY dashboards/ dashboards/
COPY simulator/ simulator/
COPY schemas/ schemas/
# confluent-kafka ships manylinux wheels with librdkafka bundled: no compiler needed.
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/paywatch --create-home paywatch

COPY deploy/local/compose/paywatch.yaml /etc/paywatch/paywatch.yaml

USER paywatch
WORKDIR /var/lib/paywatch
ENTRYPOINT ["paywatch"]
CMD ["--help"]
