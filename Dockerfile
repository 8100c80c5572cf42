# durapod's image: the operator, the API and the task runner, one image, three entrypoints.
#
# Published as ghcr.io/durapod/durapod:<version>, <version> being pyproject.toml's
# (tests/test_image.py holds the label below and the chart's default tag to it).
#
#   docker build -t ghcr.io/durapod/durapod:0.1.0 .
#
# The Helm chart picks the component with the container's `command`:
#
#   python -m durapod.operator   the operator (kopf); health on DURAPOD_OPERATOR_HEALTH_URL
#   python -m durapod.api        the HTTP API (uvicorn); `--host`, `--port` (8080)
#   python -m durapod.runner     a task pod (the TaskDefinition's default `command`)
#
# plus the `durapod` command line (`durapod --help`), the default CMD.
#
# At run time nothing writes into the image: bytecode is compiled at build time and
# PYTHONDONTWRITEBYTECODE stops Python writing more, so the root filesystem can be
# read-only. HOME is /tmp, the one path a process may expect to write (the chart mounts an
# emptyDir there). The image holds no secret: the database credentials and the run-token
# signing key come from the pod's environment (the chart's Secrets).

# The base, pinned by version (never `latest`) and the same in both stages, so the venv
# built in the first runs unchanged in the second.
FROM python:3.11.17-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY durapod/ durapod/

# The wheel, built by the pinned build backend (hatchling from constraints.txt), then the
# venv: durapod with the `operator` and `api` extras at the versions the tests ran with.
# Every dependency ships a manylinux wheel, so no compiler is needed, here or later.
RUN pip install --constraint constraints.txt hatchling \
    && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python -m venv /opt/durapod \
    && /opt/durapod/bin/pip install --constraint constraints.txt \
        "$(echo /wheels/durapod-*.whl)[operator,api]" \
    && cp constraints.txt /opt/durapod/constraints.txt


FROM python:3.11.17-slim-bookworm

LABEL org.opencontainers.image.title="durapod" \
      org.opencontainers.image.description="Durable background tasks for Kubernetes" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# One fixed, unprivileged identity (the chart's runAsUser/runAsGroup/fsGroup: 10001).
RUN groupadd --system --gid 10001 durapod \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /tmp --shell /usr/sbin/nologin durapod

# Only the venv comes from the build stage: no sources, wheels or build backend.
COPY --from=build /opt/durapod /opt/durapod

ENV PATH=/opt/durapod/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HOME=/tmp

# Users' task code goes under /app (examples/task-image/); it is on PYTHONPATH, so an
# entrypoint `tasks.orders:process_order` is /app/tasks/orders.py. Owned by root, read-only.
WORKDIR /app

USER 10001:10001

# The API's port; the operator's health port is whatever DURAPOD_OPERATOR_HEALTH_URL names.
EXPOSE 8080

# Each entrypoint handles SIGTERM itself (kopf, uvicorn, the runner's checkpoint-safe
# handler), so Python runs as PID 1 without an init.
CMD ["durapod", "--help"]
