# Runtime image for `hailo-immich serve`: a drop-in for Immich's `immich-machine-learning` container
# (same port, same API). docs/operations.md explains building, running and docker-compose.yml.
#
#   docker build -t hailo-immich .                    # hailo target: HailoRT if hailort/ holds it
#   docker build -t hailo-immich:cpu --target cpu .   # CPU only (ONNX Runtime)
#   docker run --device /dev/hailo0 --group-add "$(stat -c %g /dev/hailo0)" \
#       -p 3003:3003 -v hailo-immich-models:/models hailo-immich
#
# Build arguments:
#   BASE_IMAGE       any Debian-like image with Python 3.10+ and its venv module
#   HAILORT_VERSION  must equal the host's hailo_pci driver version (`modinfo -F version hailo_pci`)
#   HAILO_IMMICH_UID / HAILO_IMMICH_GID   the unprivileged user the service runs as
#
# Python packages come from the package index, or only from ./wheelhouse/ when it holds wheels
# (air-gapped builds; `scripts/docker_probe.sh` shows how to fill it). Nothing is downloaded when
# the container starts unless HAILO_IMMICH_FETCH_MODELS asks for it.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- deps: a virtualenv with the dependencies (its own layers: a code change does not redo them) ----
FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY wheelhouse/ /wheelhouse/
COPY docker/slim-venv.sh /usr/local/bin/slim-venv
WORKDIR /src
COPY pyproject.toml ./
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; fi; \
    python3 -m venv /opt/hailo-immich; \
    if python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        >/tmp/requirements.txt; then /opt/hailo-immich/bin/pip install --quiet -r /tmp/requirements.txt; fi

# ---- app: the package alone, under /opt/app, merged into the virtualenv by the final stages ----
FROM deps AS app
COPY README.md CHANGELOG.md ./
COPY recipes ./recipes
COPY hailo_immich_cli ./hailo_immich_cli
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; fi; \
    /opt/hailo-immich/bin/pip install --quiet --no-deps --prefix /opt/app .; \
    cp -a /opt/app/. /opt/hailo-immich/; /opt/hailo-immich/bin/hailo-immich --help >/dev/null

# ---- venv-cpu: the dependencies without pip and test suites ----
FROM deps AS venv-cpu
RUN slim-venv /opt/hailo-immich

# ---- runtime: what the cpu and hailo images share ----
FROM ${BASE_IMAGE} AS runtime
ARG HAILO_IMMICH_UID=10001
ARG HAILO_IMMICH_GID=10001
RUN set -eu; \
    groupadd --system --gid "${HAILO_IMMICH_GID}" hailo-immich; \
    useradd --system --uid "${HAILO_IMMICH_UID}" --gid hailo-immich --home-dir /models --no-create-home \
        --shell /usr/sbin/nologin hailo-immich; \
    mkdir -p /models; chown hailo-immich:hailo-immich /models
COPY docker/entrypoint.sh /usr/local/bin/hailo-immich-entrypoint
COPY docker/healthcheck.py /usr/local/bin/hailo-immich-healthcheck
ENV PATH=/opt/hailo-immich/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HAILO_IMMICH_MODELS_DIR=/models \
    IMMICH_HOST=[::] \
    IMMICH_PORT=3003
VOLUME ["/models"]
EXPOSE 3003
USER hailo-immich
WORKDIR /models
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["/opt/hailo-immich/bin/python3", "/usr/local/bin/hailo-immich-healthcheck"]
ENTRYPOINT ["/usr/local/bin/hailo-immich-entrypoint"]
CMD ["hailo-immich", "serve"]

# ---- cpu: ONNX Runtime only ----
FROM runtime AS cpu
COPY --from=venv-cpu /opt/hailo-immich /opt/hailo-immich
COPY --from=app /opt/app/ /opt/hailo-immich/
ENV HAILO_IMMICH_BACKEND=cpu

# ---- build-hailo: add HailoRT (wheel + libhailort from hailort/, Hailo Developer Zone) ----
FROM deps AS build-hailo
ARG HAILORT_VERSION=4.23.0
COPY docker/hailort-requirements.txt /tmp/hailort-requirements.txt
COPY hailort/ /hailort/
RUN set -eu; \
    mkdir -p /opt/hailort-lib; \
    wheels=$(ls /hailort/hailort-*.whl 2>/dev/null || true); \
    if [ -z "$wheels" ]; then echo "hailort/ holds no HailoRT wheel: this image runs the CPU backend only"; slim-venv; exit 0; fi; \
    wheel=$(ls /hailort/hailort-"${HAILORT_VERSION}"-*.whl 2>/dev/null | head -n 1 || true); \
    if [ -z "$wheel" ]; then \
        echo "error: hailort/ holds $(basename -a $wheels | tr '\n' ' ')but HAILORT_VERSION is ${HAILORT_VERSION};" \
             "pass --build-arg HAILORT_VERSION=<the host's hailo_pci driver version> and the matching wheel" >&2; \
        exit 1; \
    fi; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; fi; \
    /opt/hailo-immich/bin/pip install --quiet --no-deps "$wheel"; \
    /opt/hailo-immich/bin/pip install --quiet -r /tmp/hailort-requirements.txt; \
    deb=$(ls /hailort/hailort_"${HAILORT_VERSION}"_*.deb 2>/dev/null | head -n 1 || true); \
    if [ -n "$deb" ]; then \
        dpkg-deb -x "$deb" /tmp/hailort-deb; \
        find /tmp/hailort-deb -name 'libhailort.so*' -exec cp -P {} /opt/hailort-lib/ \; ; \
    fi; \
    slim-venv

# ---- hailo (default): the hailo backend when HailoRT was given, else the CPU backend (said loudly) ----
FROM runtime AS hailo
ARG HAILORT_VERSION=4.23.0
COPY --from=build-hailo /opt/hailort-lib/ /opt/hailort-lib/
COPY --from=build-hailo /opt/hailo-immich /opt/hailo-immich
COPY --from=app /opt/app/ /opt/hailo-immich/
ENV LD_LIBRARY_PATH=/opt/hailort-lib
LABEL io.hailo-immich.hailort-version=${HAILORT_VERSION}
# HailoRT, when given, must import here (its library comes from the .deb).
RUN if python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("hailo_platform") is None)'; then \
        python3 -c "import hailo_platform" || { echo "error: hailo_platform does not import; put" \
            "hailort_${HAILORT_VERSION}_<arch>.deb (libhailort) beside the wheel in hailort/" >&2; exit 1; }; \
    fi
